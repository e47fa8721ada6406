import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { AptpError, CLIP_CONTEXT_LENGTH, InputError, OrtModel, ShapeError, defaultOrtThreads, loadClipTokenizer, type ClipTokenizer, type OrtTensorData } from '@aptp/core';
import type { HostArray } from '../engines/engine';
import type { TextConditioner } from './conditioning';

/**
 * The frozen CLIP text encoder of Stable Diffusion as the UNet's conditioning (APTP.md §11: OpenCLIP ViT-H/14 text
 * tower, `last_hidden_state` after the final LayerNorm, `[B, 77, 1024]`), run from the usual exported layout through
 * onnxruntime-node:
 *
 *   tokenizer/              CLIP BPE: vocab.json + merges.txt, or tokenizer.json (`@aptp/core` `loadClipTokenizer`);
 *                           tokenizer_config.json / special_tokens_map.json give `pad_token` (SD 2.1: "!", id 0;
 *                           SD 1.x: <|endoftext|>) and `model_max_length` (77). Also looked for in text_encoder/.
 *   text_encoder/model.onnx input `input_ids` [B, S] (int32 as Optimum exports it, or int64), optional
 *                           `attention_mask` (fed all ones: diffusers passes no mask for SD); output
 *                           `last_hidden_state` [B, S, D] (else the first output).
 *
 * Prompts are tokenized as diffusers does: `<|startoftext|> … <|endoftext|>`, padded with `pad_token` to
 * `model_max_length`, truncated (the last kept id becomes `<|endoftext|>`; truncations are counted).
 */
export const CLIP_TEXT_FILES = { model: 'text_encoder/model.onnx', tokenizerDirs: ['tokenizer', 'text_encoder'] } as const;

export interface ClipTextConditionerOptions {
  /** ORT intra-op threads (default `defaultOrtThreads()`). */
  intraOpNumThreads?: number;
  /** Prompts per ONNX run (default 8). */
  batchSize?: number;
}

const TOKENIZER_FILE_SETS = ['vocab.json + merges.txt', 'tokenizer.json', 'bpe_simple_vocab_16e6.txt.gz'];

export class ClipTextConditioner implements TextConditioner {
  readonly kind = 'clip-onnx';
  /** Stable identity (cache key). */
  readonly id: string;
  /** Prompts truncated so far. */
  truncatedPrompts = 0;
  private idsType: 'int64' | 'int32';
  /** D: width of the hidden states (found by one probe run at load). */
  dim = 0;

  private constructor(
    readonly model: OrtModel,
    readonly tokenizer: ClipTokenizer,
    /** Tokens per prompt S (model_max_length, 77). */
    readonly sequenceLength: number,
    readonly padId: number,
    private readonly outputName: string,
    private readonly hasMask: boolean,
    private readonly batchSize: number,
  ) {
    this.id = `clip-onnx:${model.name}:S=${sequenceLength}:pad=${padId}`;
    this.idsType = 'int64';
  }

  /**
   * Loads the text encoder of a model folder (`modelDir/text_encoder/model.onnx` + `modelDir/tokenizer/`). The error
   * for a missing part lists every expected file.
   */
  static async load(modelDir: string, options: ClipTextConditionerOptions = {}): Promise<ClipTextConditioner> {
    const modelFile = path.join(modelDir, CLIP_TEXT_FILES.model);
    const tokDir = CLIP_TEXT_FILES.tokenizerDirs.map((d) => path.join(modelDir, d)).find((d) => hasTokenizerFiles(d));
    const missing = [...(fs.existsSync(modelFile) ? [] : [CLIP_TEXT_FILES.model]), ...(tokDir ? [] : [`tokenizer/{${TOKENIZER_FILE_SETS.join(' | ')}}`])];
    if (missing.length > 0) {
      throw new InputError('CLIP text encoder is incomplete', { code: 'E_FILE_MISSING', file: modelDir, expected: `${CLIP_TEXT_FILES.model} and tokenizer/{${TOKENIZER_FILE_SETS.join(' | ')}}`, found: `missing ${missing.join(', ')}` });
    }
    const tokenizer = loadClipTokenizer(tokDir!);
    const tokCfg = readTokenizerConfig(tokDir!);
    const sequenceLength = tokCfg.maxLength !== null && tokCfg.maxLength <= 4096 ? tokCfg.maxLength : CLIP_CONTEXT_LENGTH;
    const padId = tokCfg.padToken === null ? tokenizer.eotId : tokenId(tokDir!, tokCfg.padToken, tokenizer);
    const model = await OrtModel.load(modelFile, { intraOpNumThreads: options.intraOpNumThreads ?? defaultOrtThreads() });
    const inputs = model.inputNames;
    const outputName = model.outputNames.includes('last_hidden_state') ? 'last_hidden_state' : model.outputNames[0]!;
    const unknown = inputs.filter((n) => n !== 'input_ids' && n !== 'attention_mask');
    if (!inputs.includes('input_ids') || unknown.length > 0) {
      await model.dispose();
      throw new InputError('not a CLIP text encoder export', { code: 'E_FORMAT', file: modelFile, expected: 'inputs input_ids [, attention_mask]; output last_hidden_state', found: `inputs ${inputs.join(', ')}` });
    }
    const c = new ClipTextConditioner(model, tokenizer, sequenceLength, padId, outputName, inputs.includes('attention_mask'), options.batchSize ?? 8);
    try {
      c.dim = (await c.embed([''])).dims[2]!; // probe: D, and the id dtype the model takes
    } catch (err) {
      await c.dispose();
      throw err;
    }
    return c;
  }

  /** Token ids `[B, S]` of prompts as the encoder receives them. */
  tokenize(prompts: readonly string[]): Int32Array {
    const enc = this.tokenizer.tokenize(prompts, this.sequenceLength, this.padId);
    this.truncatedPrompts += enc.truncated.length;
    return enc.ids;
  }

  /** Hidden states `[B, S, D]` on the host, row-major. */
  async embed(prompts: readonly string[], options: { signal?: AbortSignal } = {}): Promise<HostArray> {
    const S = this.sequenceLength;
    const parts: Float32Array[] = [];
    let D = 0;
    for (let start = 0; start < prompts.length; start += this.batchSize) {
      if (options.signal?.aborted) throw new AptpError('text encoding aborted', { code: 'E_ABORTED', cause: options.signal.reason });
      const chunk = prompts.slice(start, start + this.batchSize);
      const ids = this.tokenize(chunk);
      const out = await this.run(ids, chunk.length);
      if (out.dims.length !== 3 || out.dims[0] !== chunk.length || out.dims[1] !== S) {
        throw new ShapeError('text encoder output must be [B, S, D]', { code: 'E_SHAPE', file: this.model.name, field: this.outputName, expected: `[${chunk.length}, ${S}, D]`, found: out.dims });
      }
      D = out.dims[2]!;
      parts.push(out.data as Float32Array);
    }
    const data = new Float32Array(prompts.length * S * D);
    let at = 0;
    for (const p of parts) {
      data.set(p, at);
      at += p.length;
    }
    return { data, dims: [prompts.length, S, D] };
  }

  /** Hidden states `[B, S, D]` as a tensor (caller owns it). */
  async encode(prompts: readonly string[], options: { signal?: AbortSignal } = {}): Promise<tf.Tensor3D> {
    const h = await this.embed(prompts, options);
    return tf.tensor3d(h.data, h.dims as [number, number, number]);
  }

  /** Runs the model; the id dtype (int64, else int32) is found on the first call and kept. */
  private async run(ids: Int32Array, batch: number): Promise<OrtTensorData> {
    const dims = [batch, this.sequenceLength];
    const feeds = (type: 'int64' | 'int32'): Record<string, OrtTensorData> => {
      const data = type === 'int32' ? ids : BigInt64Array.from(ids, (v) => BigInt(v));
      const f: Record<string, OrtTensorData> = { input_ids: { data, dims } };
      if (this.hasMask) f.attention_mask = { data: type === 'int32' ? new Int32Array(ids.length).fill(1) : new BigInt64Array(ids.length).fill(1n), dims };
      return f;
    };
    try {
      return (await this.model.run(feeds(this.idsType), [this.outputName]))[this.outputName]!;
    } catch (err) {
      // The element type of input_ids is not exposed by the runtime wrapper: a type mismatch on the first call
      // switches to the other integer type once (Optimum exports int32, transformers.js exports int64).
      if (!(err instanceof AptpError) || !/type/i.test(err.message)) throw err;
      const other = this.idsType === 'int64' ? 'int32' : 'int64';
      const out = (await this.model.run(feeds(other), [this.outputName]))[this.outputName]!;
      this.idsType = other;
      return out;
    }
  }

  async dispose(): Promise<void> {
    await this.model.dispose();
  }
}

function hasTokenizerFiles(dir: string): boolean {
  const p = (f: string) => fs.existsSync(path.join(dir, f));
  return (p('vocab.json') && p('merges.txt')) || p('tokenizer.json') || p('bpe_simple_vocab_16e6.txt.gz');
}

function readJsonIfPresent(file: string): Record<string, unknown> | null {
  if (!fs.existsSync(file)) return null;
  try {
    const v = JSON.parse(fs.readFileSync(file, 'utf8')) as unknown;
    return v !== null && typeof v === 'object' ? (v as Record<string, unknown>) : null;
  } catch (err) {
    throw new InputError('not valid JSON', { code: 'E_JSON', file, cause: err });
  }
}

function tokenContent(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (v !== null && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return null;
}

/** `pad_token` and `model_max_length` from tokenizer_config.json / special_tokens_map.json (null when absent). */
function readTokenizerConfig(dir: string): { padToken: string | null; maxLength: number | null } {
  const cfg = readJsonIfPresent(path.join(dir, 'tokenizer_config.json')) ?? {};
  const special = readJsonIfPresent(path.join(dir, 'special_tokens_map.json')) ?? {};
  const padToken = tokenContent(cfg.pad_token) ?? tokenContent(special.pad_token);
  const maxLength = typeof cfg.model_max_length === 'number' && Number.isInteger(cfg.model_max_length) && cfg.model_max_length > 1 ? cfg.model_max_length : null;
  return { padToken, maxLength };
}

/** The id of a token string in the vocabulary files of `dir` (vocab.json or tokenizer.json). */
function tokenId(dir: string, token: string, tokenizer: ClipTokenizer): number {
  if (token === '<|endoftext|>') return tokenizer.eotId;
  if (token === '<|startoftext|>') return tokenizer.sotId;
  const vocabFile = path.join(dir, 'vocab.json');
  const vocab = readJsonIfPresent(vocabFile);
  if (vocab && typeof vocab[token] === 'number') return vocab[token] as number;
  const tj = readJsonIfPresent(path.join(dir, 'tokenizer.json')) as { model?: { vocab?: Record<string, number> }; added_tokens?: { id: number; content: string }[] } | null;
  const added = tj?.added_tokens?.find((t) => t.content === token);
  if (added) return added.id;
  if (tj?.model?.vocab && typeof tj.model.vocab[token] === 'number') return tj.model.vocab[token]!;
  throw new InputError('pad_token is not in the vocabulary', { code: 'E_TOKENIZER', file: dir, field: 'pad_token', found: token });
}
