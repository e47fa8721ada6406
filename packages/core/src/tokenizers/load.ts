/**
 * Loads a CLIP BPE tokenizer from the usual local files (STYLE.md §3: loaders take a local folder and list the
 * expected files when one is missing), in this order of preference:
 *   1. `vocab.json` + `merges.txt`  (Hugging Face slow tokenizer; SD 2.1 `tokenizer/` folder)
 *   2. `tokenizer.json`             (Hugging Face fast tokenizer: `model.vocab`, `model.merges`, `added_tokens`)
 *   3. `bpe_simple_vocab_16e6.txt.gz` (OpenAI `clip` package: merges only; the vocabulary is derived from them)
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { InputError } from '../errors';
import { ClipTokenizer, END_OF_TEXT, START_OF_TEXT, bytesToUnicode } from './clipTokenizer';
import type { ClipTokenizerData } from './clipTokenizer';

const EXPECTED = ['vocab.json + merges.txt', 'tokenizer.json', 'bpe_simple_vocab_16e6.txt.gz'];

function readJson(file: string): unknown {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new InputError('cannot read tokenizer JSON', { file, cause: err, found: err instanceof Error ? err.message : String(err) });
  }
}

/** merges.txt lines (`#version` header and blank lines skipped). */
export function parseMerges(text: string, file = 'merges.txt'): [string, string][] {
  const out: [string, string][] = [];
  text.split('\n').forEach((line, i) => {
    const l = line.replace(/\r$/, '');
    if (l.trim() === '' || (i === 0 && l.startsWith('#version'))) return;
    const parts = l.split(' ');
    if (parts.length !== 2) throw new InputError('a merge line must hold two symbols', { file, field: `line ${i + 1}`, found: l });
    out.push([parts[0]!, parts[1]!]);
  });
  return out;
}

function vocabMap(obj: unknown, file: string, field: string): Map<string, number> {
  if (typeof obj !== 'object' || obj === null) throw new InputError('vocabulary must be an object token → id', { file, field });
  const m = new Map<string, number>();
  for (const [k, v] of Object.entries(obj as Record<string, unknown>)) {
    if (typeof v !== 'number' || !Number.isInteger(v)) throw new InputError('token id must be an integer', { file, field: `${field}.${k}`, found: v });
    m.set(k, v);
  }
  return m;
}

/** The vocabulary the OpenAI `SimpleTokenizer` builds from its merges: 256 bytes, 256 bytes + `</w>`, merges, specials. */
export function vocabFromMerges(merges: [string, string][]): Map<string, number> {
  const bytes = bytesToUnicode();
  const order = [...bytes.slice(0x21, 0x7f), ...bytes.slice(0xa1, 0xad), ...bytes.slice(0xae, 0x100)];
  for (let b = 0; b < 256; b++) if (!order.includes(bytes[b]!)) order.push(bytes[b]!);
  const tokens = [...order, ...order.map((c) => `${c}</w>`), ...merges.map(([a, b]) => a + b), START_OF_TEXT, END_OF_TEXT];
  return new Map(tokens.map((t, i) => [t, i]));
}

function fromTokenizerJson(file: string): ClipTokenizerData {
  const j = readJson(file) as { model?: { type?: string; vocab?: unknown; merges?: unknown }; added_tokens?: { id: number; content: string }[] };
  if (j.model?.type !== undefined && j.model.type !== 'BPE') {
    throw new InputError('not a BPE tokenizer', { file, field: 'model.type', expected: 'BPE', found: j.model.type });
  }
  const vocab = vocabMap(j.model?.vocab, file, 'model.vocab');
  for (const t of j.added_tokens ?? []) vocab.set(t.content, t.id);
  const raw = j.model?.merges;
  if (!Array.isArray(raw)) throw new InputError('missing BPE merges', { file, field: 'model.merges' });
  const merges = raw.map((m, i): [string, string] => {
    const parts = Array.isArray(m) ? m : String(m).split(' ');
    if (parts.length !== 2) throw new InputError('a merge must hold two symbols', { file, field: `model.merges[${i}]`, found: m });
    return [String(parts[0]), String(parts[1])];
  });
  return { vocab, merges };
}

/** Loads a CLIP tokenizer from a folder holding one of the supported file sets (see the file comment). */
export function loadClipTokenizer(dir: string): ClipTokenizer {
  const p = (f: string): string => path.join(dir, f);
  if (fs.existsSync(p('vocab.json')) && fs.existsSync(p('merges.txt'))) {
    const vocab = vocabMap(readJson(p('vocab.json')), p('vocab.json'), 'vocab');
    const merges = parseMerges(fs.readFileSync(p('merges.txt'), 'utf8'), p('merges.txt'));
    return new ClipTokenizer({ vocab, merges }, p('vocab.json'));
  }
  if (fs.existsSync(p('tokenizer.json'))) return new ClipTokenizer(fromTokenizerJson(p('tokenizer.json')), p('tokenizer.json'));
  const gz = p('bpe_simple_vocab_16e6.txt.gz');
  if (fs.existsSync(gz)) {
    // The reference keeps lines 1 .. 49152−256−2 (the first is a version header).
    const lines = gunzipSync(fs.readFileSync(gz)).toString('utf8').split('\n').slice(1, 49152 - 256 - 2 + 1);
    const merges = parseMerges(lines.join('\n'), gz);
    return new ClipTokenizer({ vocab: vocabFromMerges(merges), merges }, gz);
  }
  throw new InputError('no CLIP tokenizer files found', { file: dir, expected: EXPECTED, found: fs.existsSync(dir) ? fs.readdirSync(dir) : 'missing folder' });
}
