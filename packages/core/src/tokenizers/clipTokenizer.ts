/**
 * The CLIP byte-level BPE tokenizer (OpenAI `clip/simple_tokenizer.py`, the same vocabulary as Hugging Face
 * `CLIPTokenizer` and the SD 2.1 / OpenCLIP text encoders): text → clean → lowercase → regex pre-tokens → UTF-8 bytes
 * mapped to printable characters → BPE with `</w>` on each word's last symbol → ids, wrapped as
 * `<|startoftext|> … <|endoftext|>` and padded to the context length (77).
 *
 * Cleaning = HTML-unescape (twice) + NFC + whitespace collapse. `ftfy.fix_text` (mojibake repair) is not applied; it
 * changes nothing for well-formed UTF-8 text. Captions longer than the context are truncated the way
 * `clip.tokenize(truncate=True)` does (keep the first 77 ids, last one forced to `<|endoftext|>`) and reported.
 */
import { InputError } from '../errors';

export const CLIP_CONTEXT_LENGTH = 77;
export const START_OF_TEXT = '<|startoftext|>';
export const END_OF_TEXT = '<|endoftext|>';

const PRETOKEN = /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+/giu;

/** GPT-2 / CLIP byte → printable unicode character table (`bytes_to_unicode`). */
export function bytesToUnicode(): string[] {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n);
      n++;
    }
  }
  const table = new Array<string>(256);
  for (let i = 0; i < bs.length; i++) table[bs[i]!] = String.fromCharCode(cs[i]!);
  return table;
}

const NAMED_ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: '\u00a0' };

function htmlUnescape(s: string): string {
  return s.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (m, body: string) => {
    if (body[0] === '#') {
      const code = body[1] === 'x' || body[1] === 'X' ? parseInt(body.slice(2), 16) : parseInt(body.slice(1), 10);
      return Number.isFinite(code) && code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : m;
    }
    return NAMED_ENTITIES[body.toLowerCase()] ?? m;
  });
}

/** `whitespace_clean(basic_clean(text)).lower()` of the reference (without ftfy, see the file comment). */
export function clipCleanText(text: string): string {
  return htmlUnescape(htmlUnescape(text)).normalize('NFC').trim().replace(/\s+/gu, ' ').trim().toLowerCase();
}

export interface ClipTokenizerData {
  /** token string → id */
  vocab: Map<string, number>;
  /** BPE merges in rank order, each `[left, right]`. */
  merges: [string, string][];
}

export interface ClipEncoding {
  /** [batch, contextLength] token ids, padded with `padId`. */
  ids: Int32Array;
  batch: number;
  contextLength: number;
  /** Length before padding (after truncation) per caption. */
  lengths: number[];
  /** Captions whose `<sot> tokens <eot>` exceeded the context length: index and original token count. */
  truncated: { index: number; tokens: number }[];
}

export class ClipTokenizer {
  readonly sotId: number;
  readonly eotId: number;
  private readonly ranks = new Map<string, number>();
  private readonly byteTable = bytesToUnicode();
  private readonly cache = new Map<string, string[]>();

  constructor(
    private readonly data: ClipTokenizerData,
    readonly source = '<memory>',
  ) {
    data.merges.forEach(([a, b], i) => this.ranks.set(`${a} ${b}`, i));
    const sot = data.vocab.get(START_OF_TEXT);
    const eot = data.vocab.get(END_OF_TEXT);
    if (sot === undefined || eot === undefined) {
      throw new InputError('CLIP vocabulary lacks its special tokens', { file: source, field: 'vocab', expected: [START_OF_TEXT, END_OF_TEXT] });
    }
    this.sotId = sot;
    this.eotId = eot;
  }

  get vocabSize(): number {
    return this.data.vocab.size;
  }

  /** BPE of one pre-token already mapped to byte characters; returns its symbols (the last ends with `</w>`). */
  bpe(token: string): string[] {
    const hit = this.cache.get(token);
    if (hit !== undefined) return hit;
    let word = [...token];
    word[word.length - 1] += '</w>';
    while (word.length > 1) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i < word.length - 1; i++) {
        const r = this.ranks.get(`${word[i]} ${word[i + 1]}`);
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          best = i;
        }
      }
      if (best < 0) break;
      const first = word[best]!;
      const second = word[best + 1]!;
      const merged: string[] = [];
      for (let i = 0; i < word.length; ) {
        if (i < word.length - 1 && word[i] === first && word[i + 1] === second) {
          merged.push(first + second);
          i += 2;
        } else merged.push(word[i++]!);
      }
      word = merged;
    }
    if (this.cache.size < 100_000) this.cache.set(token, word);
    return word;
  }

  /** Token ids of a text, without the start/end tokens. */
  encode(text: string): number[] {
    const ids: number[] = [];
    for (const m of clipCleanText(text).matchAll(PRETOKEN)) {
      const piece = m[0];
      if (piece === START_OF_TEXT || piece === END_OF_TEXT) {
        ids.push(piece === START_OF_TEXT ? this.sotId : this.eotId);
        continue;
      }
      let mapped = '';
      for (const b of new TextEncoder().encode(piece)) mapped += this.byteTable[b];
      for (const sym of this.bpe(mapped)) {
        const id = this.data.vocab.get(sym);
        if (id === undefined) throw new InputError('BPE symbol missing from the vocabulary', { file: this.source, field: 'vocab', found: sym });
        ids.push(id);
      }
    }
    return ids;
  }

  /** Inverse of `encode` for ids of this vocabulary (start/end tokens and padding dropped). */
  decode(ids: ArrayLike<number>): string {
    const inv = new Map<number, string>();
    for (const [k, v] of this.data.vocab) inv.set(v, k);
    const byteOf = new Map<string, number>(this.byteTable.map((c, b) => [c, b]));
    const bytes: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (id === this.sotId || id === this.eotId) continue;
      const sym = inv.get(id);
      if (sym === undefined) continue;
      const endOfWord = sym.endsWith('</w>');
      for (const ch of endOfWord ? sym.slice(0, -4) : sym) bytes.push(byteOf.get(ch) ?? 0x3f);
      if (endOfWord) bytes.push(0x20);
    }
    return new TextDecoder().decode(Uint8Array.from(bytes)).trim();
  }

  /**
   * `clip.tokenize(texts, contextLength, truncate=True)`: `[sot, …, eot]` per text, zero-padded (or `padId`);
   * over-long captions keep their first `contextLength` ids with the last replaced by `eot`, and are listed in
   * `truncated`.
   */
  tokenize(texts: readonly string[], contextLength = CLIP_CONTEXT_LENGTH, padId = 0): ClipEncoding {
    const ids = new Int32Array(texts.length * contextLength).fill(padId);
    const lengths: number[] = [];
    const truncated: { index: number; tokens: number }[] = [];
    texts.forEach((t, b) => {
      let tokens = [this.sotId, ...this.encode(t), this.eotId];
      if (tokens.length > contextLength) {
        truncated.push({ index: b, tokens: tokens.length });
        tokens = tokens.slice(0, contextLength);
        tokens[contextLength - 1] = this.eotId;
      }
      ids.set(tokens, b * contextLength);
      lengths.push(tokens.length);
    });
    return { ids, batch: texts.length, contextLength, lengths, truncated };
  }
}
