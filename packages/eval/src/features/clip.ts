/**
 * CLIP image and text towers from local ONNX files (APTP.md §8.3 CLIP score with ViT-B/32, §8.4 CMMD with
 * ViT-L/14-336), with the reference preprocessing:
 *
 * - CLIP score (`clip` package `_transform(224)`): PIL bicubic resize of the shorter side to 224 (long side
 *   `int(224·long/short)`), center crop 224 (offsets `round((h−224)/2)`, Python rounding), /255,
 *   normalise with the CLIP mean/std.
 * - CMMD (cmmd-pytorch): center crop to the largest square (offsets `(h−l)//2`), PIL bicubic resize to 336, /255,
 *   normalise with the CLIP mean/std; no further resize/crop.
 * - Text: CLIP BPE ids `[B, 77]` (`@aptp/core` `ClipTokenizer`), truncated like `clip.tokenize(truncate=True)`;
 *   every truncated caption is reported.
 *
 * The ONNX image tower takes float32 `[B, 3, S, S]` and returns the projected embedding `[B, D]`; the text tower takes
 * int64 (or int32) ids `[B, 77]` (plus `attention_mask` if the graph has one) and returns `[B, D]`. Embeddings are
 * L2-normalised by default (as CMMD does; cosine-based CLIP score is unaffected).
 */
import { OrtModel } from '@aptp/core';
import type { ClipTokenizer, OrtTensorData } from '@aptp/core';
import type { FeatureMatrix } from '../metrics/frechet';
import { concatRows, normalizeRowsInPlace, runEmbedding, sha256File } from './embed';
import { loadRgbImage } from './images';
import { cropImage, pilResize, pythonRound } from './resize';
import type { PilFilter, RgbImage } from './resize';

export const CLIP_MEAN: readonly [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
export const CLIP_STD: readonly [number, number, number] = [0.26862954, 0.26130258, 0.27577711];

export interface ClipImagePreprocess {
  size: number;
  /** 'resizeThenCrop': shorter side → size, center crop (clip `_transform`); 'cropThenResize': square crop, resize (CMMD). */
  order: 'resizeThenCrop' | 'cropThenResize';
  filter: PilFilter;
  mean: readonly [number, number, number];
  std: readonly [number, number, number];
}

/** OpenAI CLIP ViT-B/32 preprocessing for the CLIP score (§8.3). */
export const CLIP_SCORE_PREPROCESS: ClipImagePreprocess = { size: 224, order: 'resizeThenCrop', filter: 'bicubic', mean: CLIP_MEAN, std: CLIP_STD };
/** cmmd-pytorch preprocessing for ViT-L/14-336 (§8.4). */
export const CMMD_PREPROCESS: ClipImagePreprocess = { size: 336, order: 'cropThenResize', filter: 'bicubic', mean: CLIP_MEAN, std: CLIP_STD };

/** The 8-bit image the reference feeds to ToTensor (resized and cropped, before scaling). */
export function clipResizeCrop(img: RgbImage, p: ClipImagePreprocess): RgbImage {
  const { size } = p;
  if (p.order === 'cropThenResize') {
    const l = Math.min(img.width, img.height);
    const sq = cropImage(img, Math.floor((img.height - l) / 2), Math.floor((img.width - l) / 2), l, l);
    return pilResize(sq, size, size, p.filter);
  }
  const { width: w, height: h } = img;
  const [newW, newH] = w <= h ? [size, Math.trunc((size * h) / w)] : [Math.trunc((size * w) / h), size];
  const r = pilResize(img, newW, newH, p.filter);
  return cropImage(r, pythonRound((newH - size) / 2), pythonRound((newW - size) / 2), size, size);
}

/** Full image preprocessing → CHW float32 [3, size, size]. */
export function clipImagePreprocess(img: RgbImage, p: ClipImagePreprocess): Float32Array {
  const r = clipResizeCrop(img, p);
  const hw = p.size * p.size;
  const out = new Float32Array(3 * hw);
  for (let i = 0; i < hw; i++) {
    for (let c = 0; c < 3; c++) out[c * hw + i] = (r.data[i * 3 + c]! / 255 - p.mean[c]!) / p.std[c]!;
  }
  return out;
}

export interface ClipImageOptions {
  preprocess?: ClipImagePreprocess;
  batchSize?: number;
  /** L2-normalise each embedding (default true). */
  normalize?: boolean;
  outputName?: string;
  threads?: number;
}

export class ClipImageFeatures {
  private constructor(
    private readonly model: OrtModel,
    readonly modelFile: string,
    readonly preprocess: ClipImagePreprocess,
    private readonly batchSize: number,
    private readonly normalize: boolean,
    private readonly outputName?: string,
  ) {}

  static async load(modelFile: string, options: ClipImageOptions = {}): Promise<ClipImageFeatures> {
    const model = await OrtModel.load(modelFile, { intraOpNumThreads: options.threads });
    return new ClipImageFeatures(model, modelFile, options.preprocess ?? CLIP_SCORE_PREPROCESS, Math.max(1, options.batchSize ?? 16), options.normalize ?? true, options.outputName);
  }

  async cacheKey(): Promise<string> {
    return JSON.stringify({ kind: 'clip-image', model: await sha256File(this.modelFile), pre: this.preprocess, normalize: this.normalize, output: this.outputName ?? null });
  }

  async extract(images: readonly RgbImage[], signal?: AbortSignal): Promise<FeatureMatrix> {
    const parts: FeatureMatrix[] = [];
    let dim = 0;
    const s = this.preprocess.size;
    const chw = 3 * s * s;
    for (let b0 = 0; b0 < images.length; b0 += this.batchSize) {
      signal?.throwIfAborted();
      const batch = images.slice(b0, b0 + this.batchSize);
      const x = new Float32Array(batch.length * chw);
      batch.forEach((img, i) => x.set(clipImagePreprocess(img, this.preprocess), i * chw));
      const f = await runEmbedding(this.model, { [this.model.inputNames[0]!]: { data: x, dims: [batch.length, 3, s, s] } }, batch.length, this.outputName);
      dim = f.dim;
      parts.push(this.normalize ? normalizeRowsInPlace(f) : f);
    }
    return concatRows(parts, dim);
  }

  async extractFiles(files: readonly string[], onProgress?: (done: number, total: number) => void, signal?: AbortSignal): Promise<FeatureMatrix> {
    const parts: FeatureMatrix[] = [];
    let dim = 0;
    for (let b0 = 0; b0 < files.length; b0 += this.batchSize) {
      const imgs = await Promise.all(files.slice(b0, b0 + this.batchSize).map((f) => loadRgbImage(f)));
      const f = await this.extract(imgs, signal);
      dim = f.dim;
      parts.push(f);
      onProgress?.(Math.min(files.length, b0 + this.batchSize), files.length);
    }
    return concatRows(parts, dim);
  }

  async dispose(): Promise<void> {
    await this.model.dispose();
  }
}

export interface ClipTextOptions {
  contextLength?: number;
  /** Padding id after `<|endoftext|>` (OpenAI clip: 0). */
  padId?: number;
  /** Integer type of the ids input (default int64). */
  idsType?: 'int64' | 'int32';
  batchSize?: number;
  normalize?: boolean;
  outputName?: string;
  threads?: number;
}

export interface ClipTextResult {
  features: FeatureMatrix;
  /** Captions longer than the context: index and token count before truncation. */
  truncated: { index: number; tokens: number }[];
}

export class ClipTextFeatures {
  private constructor(
    private readonly model: OrtModel,
    readonly modelFile: string,
    readonly tokenizer: ClipTokenizer,
    private readonly opts: Required<Omit<ClipTextOptions, 'outputName' | 'threads'>> & { outputName?: string },
  ) {}

  static async load(modelFile: string, tokenizer: ClipTokenizer, options: ClipTextOptions = {}): Promise<ClipTextFeatures> {
    const model = await OrtModel.load(modelFile, { intraOpNumThreads: options.threads });
    return new ClipTextFeatures(model, modelFile, tokenizer, {
      contextLength: options.contextLength ?? 77,
      padId: options.padId ?? 0,
      idsType: options.idsType ?? 'int64',
      batchSize: Math.max(1, options.batchSize ?? 64),
      normalize: options.normalize ?? true,
      outputName: options.outputName,
    });
  }

  /** Embeds captions; over-long ones are truncated and listed in `truncated` (indices into `captions`). */
  async extract(captions: readonly string[], signal?: AbortSignal): Promise<ClipTextResult> {
    const parts: FeatureMatrix[] = [];
    const truncated: { index: number; tokens: number }[] = [];
    let dim = 0;
    const { contextLength: ctx, batchSize } = this.opts;
    const names = this.model.inputNames;
    const idsName = names.includes('input_ids') ? 'input_ids' : names[0]!;
    const maskName = names.find((n) => n === 'attention_mask');
    for (let b0 = 0; b0 < captions.length; b0 += batchSize) {
      signal?.throwIfAborted();
      const batch = captions.slice(b0, b0 + batchSize);
      const enc = this.tokenizer.tokenize(batch, ctx, this.opts.padId);
      for (const t of enc.truncated) truncated.push({ index: b0 + t.index, tokens: t.tokens });
      const ids = this.opts.idsType === 'int64' ? BigInt64Array.from(enc.ids, (v) => BigInt(v)) : Int32Array.from(enc.ids);
      const feeds: Record<string, OrtTensorData> = { [idsName]: { data: ids, dims: [batch.length, ctx] } };
      if (maskName !== undefined) {
        const mask = new BigInt64Array(batch.length * ctx);
        enc.lengths.forEach((len, i) => mask.fill(1n, i * ctx, i * ctx + len));
        feeds[maskName] = this.opts.idsType === 'int64' ? { data: mask, dims: [batch.length, ctx] } : { data: Int32Array.from(mask, Number), dims: [batch.length, ctx] };
      }
      const f = await runEmbedding(this.model, feeds, batch.length, this.opts.outputName);
      dim = f.dim;
      parts.push(this.opts.normalize ? normalizeRowsInPlace(f) : f);
    }
    return { features: concatRows(parts, dim), truncated };
  }

  async dispose(): Promise<void> {
    await this.model.dispose();
  }
}
