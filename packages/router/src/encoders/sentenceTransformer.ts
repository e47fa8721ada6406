import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as tf from '@tensorflow/tfjs-core';
import { ConfigError, InputError, OrtModel, OrtTensorData, ShapeError, WordPieceTokenizer, loadWordPieceTokenizer } from '@aptp/core';
import { readJsonFile, requireFiles } from '../io/files';
import { EncodeOptions, PromptEncoder, encodeAsTensor } from './encoder';

/**
 * The reference's prompt encoder (APTP.md §2.1): `sentence-transformers/all-mpnet-base-v2` as plain `AutoTokenizer` +
 * `AutoModel`, embedding = attention-mask-weighted mean of the last hidden states,
 * `Σ_t m_t h_t / max(Σ_t m_t, 1e-9)`, **without** L2 normalisation (unlike the sentence-transformers pipeline);
 * tokenizer called with `padding=True, truncation=True` (truncation at `model_max_length`, 512).
 *
 * Runs a local model folder in the Hugging Face layout with onnxruntime-node:
 *   tokenizer.json        WordPiece fast tokenizer (`@aptp/core` `WordPieceTokenizer`)
 *   config.json           `hidden_size` (d), `pad_token_id`
 *   onnx/model.onnx       inputs `input_ids`, `attention_mask` (int64 [B, S]; `token_type_ids` fed zeros if present),
 *                         output `last_hidden_state` [B, S, d]
 *   tokenizer_config.json (optional) `model_max_length`
 */
export const SENTENCE_TRANSFORMER_FILES = ['tokenizer.json', 'config.json', 'onnx/model.onnx'] as const;

export interface SentenceTransformerOptions {
  /** Prompts per ONNX run (default 32); each run is padded to its longest prompt. */
  batchSize?: number;
  /** Truncation length in tokens incl. specials (default: `model_max_length`, else 512). */
  maxLength?: number;
  /** ORT intra-op threads (default: core's default). */
  threads?: number;
}

const OUTPUT_NAMES = ['last_hidden_state', 'token_embeddings'];

export class SentenceTransformerEncoder implements PromptEncoder {
  readonly id: string;
  readonly dim: number;
  readonly dir: string;
  readonly tokenizer: WordPieceTokenizer;
  private model: OrtModel | null;
  private readonly outputName: string;
  private readonly batchSize: number;
  /** Prompts truncated so far (reported, as STYLE asks for skipped/changed data). */
  truncatedPrompts = 0;

  private constructor(dir: string, id: string, dim: number, tokenizer: WordPieceTokenizer, model: OrtModel, outputName: string, batchSize: number) {
    this.dir = dir;
    this.id = id;
    this.dim = dim;
    this.tokenizer = tokenizer;
    this.model = model;
    this.outputName = outputName;
    this.batchSize = batchSize;
  }

  async embed(prompts: readonly string[], options: EncodeOptions = {}): Promise<Float32Array> {
    const model = this.live();
    const d = this.dim;
    const out = new Float32Array(prompts.length * d);
    for (let start = 0; start < prompts.length; start += this.batchSize) {
      if (options.signal?.aborted) throw options.signal.reason ?? new Error('aborted');
      const chunk = prompts.slice(start, start + this.batchSize);
      const enc = this.tokenizer.encodeBatch(chunk);
      this.truncatedPrompts += enc.truncated;
      const dims = [enc.batch, enc.length];
      const feeds: Record<string, OrtTensorData> = {};
      for (const name of model.inputNames) {
        if (name === 'input_ids') feeds[name] = { data: BigInt64Array.from(enc.inputIds, (v) => BigInt(v)), dims };
        else if (name === 'attention_mask') feeds[name] = { data: BigInt64Array.from(enc.attentionMask, (v) => BigInt(v)), dims };
        else if (name === 'token_type_ids') feeds[name] = { data: new BigInt64Array(enc.batch * enc.length), dims };
        else throw new InputError('unsupported model input', { file: path.join(this.dir, 'onnx/model.onnx'), field: name, expected: 'input_ids, attention_mask[, token_type_ids]' });
      }
      const res = (await model.run(feeds, [this.outputName]))[this.outputName]!;
      const [b, s, h] = res.dims;
      if (res.dims.length !== 3 || b !== enc.batch || s !== enc.length || h !== d) {
        throw new ShapeError('unexpected encoder output shape', { file: path.join(this.dir, 'onnx/model.onnx'), field: this.outputName, expected: [enc.batch, enc.length, d], found: res.dims });
      }
      meanPool(res.data as Float32Array, enc.attentionMask, enc.batch, enc.length, d, out.subarray(start * d, (start + chunk.length) * d));
      options.onProgress?.({ label: 'encode', done: Math.min(prompts.length, start + chunk.length), total: prompts.length });
    }
    return out;
  }

  encode(prompts: readonly string[], options?: EncodeOptions): Promise<tf.Tensor2D> {
    return encodeAsTensor(this, prompts, options);
  }

  async dispose(): Promise<void> {
    const m = this.model;
    this.model = null;
    if (m) await m.dispose();
  }

  private live(): OrtModel {
    if (!this.model) throw new InputError('SentenceTransformerEncoder used after dispose()', { code: 'E_DISPOSED', file: this.dir });
    return this.model;
  }

  /** Loads a local model folder in the all-mpnet-base-v2 layout (the missing files are listed if any). */
  static async load(dir: string, options: SentenceTransformerOptions = {}): Promise<SentenceTransformerEncoder> {
    requireFiles(dir, SENTENCE_TRANSFORMER_FILES, 'sentence-transformer model');
    const cfgFile = path.join(dir, 'config.json');
    const cfg = readJsonFile(cfgFile) as { hidden_size?: unknown; pad_token_id?: unknown };
    const dim = cfg.hidden_size;
    if (!(typeof dim === 'number' && Number.isInteger(dim) && dim > 0)) throw new ConfigError('hidden_size must be a positive integer', { file: cfgFile, field: 'hidden_size', found: dim });
    const padId = typeof cfg.pad_token_id === 'number' ? cfg.pad_token_id : undefined;
    const tokenizer = loadWordPieceTokenizer(dir, { ...(options.maxLength !== undefined ? { maxLength: options.maxLength } : {}), ...(padId !== undefined ? { padId } : {}) });
    const batchSize = options.batchSize ?? 32;
    if (!(Number.isInteger(batchSize) && batchSize > 0)) throw new ConfigError('batchSize must be a positive integer', { field: 'batchSize', found: batchSize });
    const onnxFile = path.join(dir, 'onnx/model.onnx');
    const model = await OrtModel.load(onnxFile, options.threads !== undefined ? { intraOpNumThreads: options.threads } : {});
    const outputName = OUTPUT_NAMES.find((n) => model.outputNames.includes(n)) ?? model.outputNames[0];
    if (outputName === undefined) {
      await model.dispose();
      throw new InputError('the ONNX model has no outputs', { file: onnxFile, expected: OUTPUT_NAMES.join(' | ') });
    }
    const id = `sentence-transformer:${path.basename(path.resolve(dir))}:${folderFingerprint(dir)}:max=${tokenizer.data.maxLength}`;
    return new SentenceTransformerEncoder(dir, id, dim, tokenizer, model, outputName, batchSize);
  }
}

/** Masked mean pooling (reference `mean_pooling`): `Σ_t m_t h_t / max(Σ_t m_t, 1e-9)`, no normalisation. */
export function meanPool(hidden: Float32Array, mask: ArrayLike<number>, batch: number, length: number, dim: number, out = new Float32Array(batch * dim)): Float32Array {
  const acc = new Float64Array(dim);
  for (let b = 0; b < batch; b++) {
    acc.fill(0);
    let count = 0;
    for (let t = 0; t < length; t++) {
      const m = mask[b * length + t]!;
      if (m === 0) continue;
      count += m;
      const base = (b * length + t) * dim;
      for (let i = 0; i < dim; i++) acc[i] += m * hidden[base + i]!;
    }
    const denom = Math.max(count, 1e-9);
    for (let i = 0; i < dim; i++) out[b * dim + i] = acc[i]! / denom;
  }
  return out;
}

/** Identity of a model folder for cache keys: hashes of the small files and size + head/tail of the ONNX file. */
function folderFingerprint(dir: string): string {
  const h = crypto.createHash('sha256');
  for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) {
    const p = path.join(dir, f);
    if (fs.existsSync(p)) h.update(f).update(fs.readFileSync(p));
  }
  const onnx = path.join(dir, 'onnx/model.onnx');
  const size = fs.statSync(onnx).size;
  h.update(`onnx:${size}`);
  const fd = fs.openSync(onnx, 'r');
  try {
    const n = Math.min(size, 1 << 20);
    const buf = Buffer.alloc(n);
    fs.readSync(fd, buf, 0, n, 0);
    h.update(buf);
    fs.readSync(fd, buf, 0, n, size - n);
    h.update(buf);
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex').slice(0, 16);
}

/** `SentenceTransformerEncoder.load` as a function (the async loader factory). */
export function loadSentenceTransformer(dir: string, options: SentenceTransformerOptions = {}): Promise<SentenceTransformerEncoder> {
  return SentenceTransformerEncoder.load(dir, options);
}
