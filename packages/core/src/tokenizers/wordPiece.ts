/**
 * A WordPiece tokenizer read from a Hugging Face fast-tokenizer `tokenizer.json` (BERT / MPNet family, e.g.
 * `sentence-transformers/all-mpnet-base-v2`, the APTP prompt encoder, APTP.md §2.1), reproducing the `tokenizers`
 * pipeline for the components these models use:
 *
 *   added (special) tokens split off the raw text → normalizer `BertNormalizer` (clean text, pad CJK characters,
 *   strip accents, lowercase) → pre-tokenizer `BertPreTokenizer` (split on whitespace and isolate punctuation; also
 *   `Whitespace`, `WhitespaceSplit`) → model `WordPiece` (greedy longest match, `##` continuation, unknown words →
 *   `unk_token`) → truncation to `maxLength` (specials included) → post-processor `TemplateProcessing`,
 *   `BertProcessing` or `RobertaProcessing` (single sequence).
 *
 * Batches are padded to the longest row (`padding=True`) with the pad id, and an attention mask is returned, as the
 * reference's `tokenizer(prompts, padding=True, truncation=True)`. Unsupported components are `ConfigError`s naming the
 * field, never silently ignored.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ConfigError, InputError } from '../errors';

export interface WordPieceNormalizer {
  cleanText: boolean;
  handleChineseChars: boolean;
  stripAccents: boolean;
  lowercase: boolean;
}

export type WordPiecePreTokenizer = 'bert' | 'whitespace' | 'whitespaceSplit';

export interface WordPieceTokenizerData {
  vocab: ReadonlyMap<string, number>;
  unkToken: string;
  continuingSubwordPrefix: string;
  maxInputCharsPerWord: number;
  normalizer: WordPieceNormalizer | null;
  preTokenizer: WordPiecePreTokenizer;
  /** Ids placed before and after the sequence by the post-processor (single sequence). */
  prefixIds: number[];
  suffixIds: number[];
  /** Added tokens matched verbatim in the raw text (longest first). */
  addedTokens: ReadonlyArray<{ content: string; id: number }>;
  padId: number;
  /** Truncation length including the special tokens (the tokenizer's `model_max_length`). */
  maxLength: number;
}

export interface WordPieceBatch {
  /** `[batch, length]` row-major token ids, right-padded with the pad id. */
  inputIds: Int32Array;
  /** `[batch, length]` 1 for real tokens, 0 for padding. */
  attentionMask: Int32Array;
  batch: number;
  length: number;
  /** Number of prompts that were truncated to `maxLength`. */
  truncated: number;
}

const CJK_RANGES: Array<[number, number]> = [
  [0x4e00, 0x9fff],
  [0x3400, 0x4dbf],
  [0x20000, 0x2a6df],
  [0x2a700, 0x2b73f],
  [0x2b740, 0x2b81f],
  [0x2b820, 0x2ceaf],
  [0xf900, 0xfaff],
  [0x2f800, 0x2fa1f],
];

function isCjk(cp: number): boolean {
  return CJK_RANGES.some(([a, b]) => cp >= a && cp <= b);
}

const CONTROL = /\p{C}/u;
const WHITESPACE = /\s/u;
const MARK_NONSPACING = /\p{Mn}/u;
const PUNCTUATION = /\p{P}/u;

function isBertPunctuation(ch: string): boolean {
  const cp = ch.codePointAt(0)!;
  // ASCII punctuation as Rust's `is_ascii_punctuation` (includes $ + < = > ^ ` | ~), plus Unicode P*.
  if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126)) return true;
  return PUNCTUATION.test(ch);
}

/** `BertNormalizer` (HF tokenizers): clean text → pad CJK → strip accents (NFD, drop Mn) → lowercase. */
export function bertNormalize(text: string, n: WordPieceNormalizer): string {
  let out = '';
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    if (n.cleanText) {
      if (ch === '\t' || ch === '\n' || ch === '\r') {
        out += ' ';
        continue;
      }
      if (cp === 0 || cp === 0xfffd || CONTROL.test(ch)) continue;
      if (WHITESPACE.test(ch)) {
        out += ' ';
        continue;
      }
    }
    if (n.handleChineseChars && isCjk(cp)) out += ` ${ch} `;
    else out += ch;
  }
  if (n.stripAccents) {
    let s = '';
    for (const ch of out.normalize('NFD')) if (!MARK_NONSPACING.test(ch)) s += ch;
    out = s;
  }
  if (n.lowercase) out = out.toLowerCase();
  return out;
}

/** Pre-tokenizers: `bert` = whitespace split + isolated punctuation; `whitespace` = `\w+|[^\w\s]+`; `whitespaceSplit`. */
export function preTokenize(text: string, kind: WordPiecePreTokenizer): string[] {
  if (kind === 'whitespaceSplit') return text.split(/\s+/u).filter((w) => w.length > 0);
  if (kind === 'whitespace') return text.match(/[\p{L}\p{N}\p{M}_]+|[^\p{L}\p{N}\p{M}_\s]+/gu) ?? [];
  const words: string[] = [];
  let cur = '';
  for (const ch of text) {
    if (WHITESPACE.test(ch)) {
      if (cur) words.push(cur);
      cur = '';
    } else if (isBertPunctuation(ch)) {
      if (cur) words.push(cur);
      words.push(ch);
      cur = '';
    } else {
      cur += ch;
    }
  }
  if (cur) words.push(cur);
  return words;
}

export class WordPieceTokenizer {
  readonly data: WordPieceTokenizerData;
  private readonly unkId: number;

  constructor(data: WordPieceTokenizerData) {
    const unk = data.vocab.get(data.unkToken);
    if (unk === undefined) throw new ConfigError('unk_token is not in the vocabulary', { field: 'model.unk_token', found: data.unkToken });
    if (data.maxLength <= data.prefixIds.length + data.suffixIds.length) {
      throw new ConfigError('maxLength leaves no room for text', { field: 'maxLength', expected: `> ${data.prefixIds.length + data.suffixIds.length}`, found: data.maxLength });
    }
    this.data = data;
    this.unkId = unk;
  }

  /** WordPiece ids of one pre-token (greedy longest match; the whole word becomes `unk` if any piece is unknown). */
  wordPiece(word: string): number[] {
    const chars = Array.from(word);
    if (chars.length > this.data.maxInputCharsPerWord) return [this.unkId];
    const ids: number[] = [];
    let start = 0;
    while (start < chars.length) {
      let end = chars.length;
      let found = -1;
      while (start < end) {
        let sub = chars.slice(start, end).join('');
        if (start > 0) sub = this.data.continuingSubwordPrefix + sub;
        const id = this.data.vocab.get(sub);
        if (id !== undefined) {
          found = id;
          break;
        }
        end--;
      }
      if (found < 0) return [this.unkId];
      ids.push(found);
      start = end;
    }
    return ids;
  }

  /** Ids of the text without special tokens and without truncation. */
  tokenize(text: string): number[] {
    const ids: number[] = [];
    for (const part of this.splitAdded(text)) {
      if (typeof part === 'number') {
        ids.push(part);
        continue;
      }
      const normalized = this.data.normalizer ? bertNormalize(part, this.data.normalizer) : part;
      for (const w of preTokenize(normalized, this.data.preTokenizer)) ids.push(...this.wordPiece(w));
    }
    return ids;
  }

  /** Ids with the post-processor's special tokens, truncated to `maxLength` (default: the tokenizer's). */
  encode(text: string, maxLength = this.data.maxLength): { ids: number[]; truncated: boolean } {
    const room = maxLength - this.data.prefixIds.length - this.data.suffixIds.length;
    if (room < 1) throw new ConfigError('maxLength leaves no room for text', { field: 'maxLength', expected: `> ${maxLength - room}`, found: maxLength });
    const body = this.tokenize(text);
    const truncated = body.length > room;
    return { ids: [...this.data.prefixIds, ...body.slice(0, room), ...this.data.suffixIds], truncated };
  }

  /** A batch padded to its longest row (`padding=True, truncation=True`). */
  encodeBatch(texts: readonly string[], maxLength = this.data.maxLength): WordPieceBatch {
    const rows = texts.map((t) => this.encode(t, maxLength));
    const length = Math.max(1, ...rows.map((r) => r.ids.length));
    const inputIds = new Int32Array(texts.length * length).fill(this.data.padId);
    const attentionMask = new Int32Array(texts.length * length);
    rows.forEach((r, b) => {
      inputIds.set(r.ids, b * length);
      attentionMask.fill(1, b * length, b * length + r.ids.length);
    });
    return { inputIds, attentionMask, batch: texts.length, length, truncated: rows.filter((r) => r.truncated).length };
  }

  private splitAdded(text: string): Array<string | number> {
    const added = this.data.addedTokens;
    if (added.length === 0) return [text];
    const out: Array<string | number> = [];
    let rest = text;
    while (rest.length > 0) {
      let best = -1;
      let tok: { content: string; id: number } | null = null;
      for (const a of added) {
        const i = rest.indexOf(a.content);
        if (i >= 0 && (best < 0 || i < best || (i === best && a.content.length > tok!.content.length))) {
          best = i;
          tok = a;
        }
      }
      if (!tok) {
        out.push(rest);
        break;
      }
      if (best > 0) out.push(rest.slice(0, best));
      out.push(tok.id);
      rest = rest.slice(best + tok.content.length);
    }
    return out;
  }
}

interface TokenizerJson {
  model?: { type?: string; vocab?: Record<string, number>; unk_token?: string; continuing_subword_prefix?: string; max_input_chars_per_word?: number };
  normalizer?: { type?: string; clean_text?: boolean; handle_chinese_chars?: boolean; strip_accents?: boolean | null; lowercase?: boolean; normalizers?: unknown[] } | null;
  pre_tokenizer?: { type?: string } | null;
  post_processor?: {
    type?: string;
    cls?: [string, number];
    sep?: [string, number];
    single?: Array<{ SpecialToken?: { id: string }; Sequence?: { id: string } }>;
    special_tokens?: Record<string, { ids: number[] }>;
  } | null;
  added_tokens?: Array<{ id: number; content: string; special?: boolean }>;
  padding?: { pad_id?: number; pad_token?: string } | null;
  truncation?: { max_length?: number } | null;
}

export interface WordPieceLoadOptions {
  /** Truncation length (default: `tokenizer_config.json` `model_max_length` if sane, else 512). */
  maxLength?: number;
  /** Pad id (default: `tokenizer.json` `padding.pad_id`, else the `<pad>` / `[PAD]` token, else 0). */
  padId?: number;
}

/** Parses a `tokenizer.json` object (`file` is used in error messages). */
export function wordPieceFromTokenizerJson(json: unknown, file = 'tokenizer.json', options: WordPieceLoadOptions = {}): WordPieceTokenizer {
  const j = json as TokenizerJson;
  const model = j.model;
  if (!model || model.type !== 'WordPiece') {
    throw new ConfigError('unsupported tokenizer model', { file, field: 'model.type', expected: 'WordPiece', found: model?.type ?? 'missing' });
  }
  if (!model.vocab || typeof model.vocab !== 'object') throw new ConfigError('missing vocabulary', { file, field: 'model.vocab' });
  const vocab = new Map(Object.entries(model.vocab));
  let normalizer: WordPieceNormalizer | null = null;
  if (j.normalizer) {
    if (j.normalizer.type !== 'BertNormalizer') {
      throw new ConfigError('unsupported normalizer', { file, field: 'normalizer.type', expected: 'BertNormalizer or null', found: j.normalizer.type });
    }
    const lowercase = j.normalizer.lowercase ?? true;
    normalizer = {
      cleanText: j.normalizer.clean_text ?? true,
      handleChineseChars: j.normalizer.handle_chinese_chars ?? true,
      stripAccents: j.normalizer.strip_accents ?? lowercase, // null: follows lowercase (HF behaviour)
      lowercase,
    };
  }
  const preType = j.pre_tokenizer?.type ?? 'BertPreTokenizer';
  const PRE: Record<string, WordPiecePreTokenizer> = { BertPreTokenizer: 'bert', Whitespace: 'whitespace', WhitespaceSplit: 'whitespaceSplit' };
  const preTokenizer = PRE[preType];
  if (!preTokenizer) throw new ConfigError('unsupported pre-tokenizer', { file, field: 'pre_tokenizer.type', expected: Object.keys(PRE).join(' | '), found: preType });
  const idOf = (tok: string, field: string): number => {
    const id = vocab.get(tok) ?? j.added_tokens?.find((a) => a.content === tok)?.id;
    if (id === undefined) throw new ConfigError('special token not in the vocabulary', { file, field, found: tok });
    return id;
  };
  let prefixIds: number[] = [];
  let suffixIds: number[] = [];
  const pp = j.post_processor;
  if (pp) {
    if (pp.type === 'BertProcessing' || pp.type === 'RobertaProcessing') {
      if (!pp.cls || !pp.sep) throw new ConfigError('post-processor needs cls and sep', { file, field: 'post_processor' });
      prefixIds = [pp.cls[1]];
      suffixIds = [pp.sep[1]];
    } else if (pp.type === 'TemplateProcessing') {
      const single = pp.single ?? [];
      const seq = single.findIndex((p) => p.Sequence);
      if (seq < 0) throw new ConfigError('template has no sequence', { file, field: 'post_processor.single' });
      const ids = (parts: typeof single, field: string): number[] =>
        parts.flatMap((p) => {
          const name = p.SpecialToken?.id;
          if (name === undefined) throw new ConfigError('template may hold one sequence only', { file, field });
          return pp.special_tokens?.[name]?.ids ?? [idOf(name, `${field}.${name}`)];
        });
      prefixIds = ids(single.slice(0, seq), 'post_processor.single');
      suffixIds = ids(single.slice(seq + 1), 'post_processor.single');
    } else {
      throw new ConfigError('unsupported post-processor', { file, field: 'post_processor.type', expected: 'TemplateProcessing | BertProcessing | RobertaProcessing | null', found: pp.type });
    }
  }
  const addedTokens = (j.added_tokens ?? []).map((a) => ({ content: a.content, id: a.id })).sort((a, b) => b.content.length - a.content.length);
  const padToken = j.padding?.pad_token ?? ['<pad>', '[PAD]'].find((t) => vocab.has(t) || addedTokens.some((a) => a.content === t));
  const padId = options.padId ?? j.padding?.pad_id ?? (padToken !== undefined ? idOf(padToken, 'padding.pad_token') : 0);
  return new WordPieceTokenizer({
    vocab,
    unkToken: model.unk_token ?? '[UNK]',
    continuingSubwordPrefix: model.continuing_subword_prefix ?? '##',
    maxInputCharsPerWord: model.max_input_chars_per_word ?? 100,
    normalizer,
    preTokenizer,
    prefixIds,
    suffixIds,
    addedTokens,
    padId,
    maxLength: options.maxLength ?? 512,
  });
}

/**
 * Loads `tokenizer.json` from a model folder (or a file path). `model_max_length` of a sibling `tokenizer_config.json`
 * sets the truncation length when it is a real limit (HF uses a huge sentinel for "none"); default 512.
 */
export function loadWordPieceTokenizer(dirOrFile: string, options: WordPieceLoadOptions = {}): WordPieceTokenizer {
  const file = dirOrFile.endsWith('.json') ? dirOrFile : path.join(dirOrFile, 'tokenizer.json');
  if (!fs.existsSync(file)) throw new InputError('tokenizer file missing', { code: 'E_FILE_MISSING', file, expected: 'tokenizer.json (Hugging Face fast tokenizer)' });
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new InputError('cannot read tokenizer JSON', { file, cause: err });
  }
  let maxLength = options.maxLength;
  if (maxLength === undefined) {
    const cfgFile = path.join(path.dirname(file), 'tokenizer_config.json');
    if (fs.existsSync(cfgFile)) {
      try {
        const m = (JSON.parse(fs.readFileSync(cfgFile, 'utf8')) as { model_max_length?: number }).model_max_length;
        if (typeof m === 'number' && Number.isInteger(m) && m > 0 && m < 1e6) maxLength = m;
      } catch (err) {
        throw new InputError('cannot read tokenizer config JSON', { file: cfgFile, cause: err });
      }
    }
  }
  return wordPieceFromTokenizerJson(json, file, { ...options, maxLength });
}
