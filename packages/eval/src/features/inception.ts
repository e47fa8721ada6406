/**
 * FID features (APTP.md §8.2): InceptionV3 pool3 (2048-d) from a local ONNX file, with clean-fid
 * `mode="legacy_pytorch"` preprocessing:
 *   uint8 RGB → float → PyTorch bilinear resize to 299×299 (align_corners=False, no antialias), clip [0, 255], not
 *   re-quantised → /255 → the network's input scaling → NCHW.
 * The pytorch-fid network (TF-FID weights) scales [0, 1] to [−1, 1] inside `forward` (`normalize_input=True`), so an
 * ONNX export of it takes either [0, 1] (normalisation kept in the graph) or [−1, 1] (exported without it): say which
 * with `inputRange` (default `'minusOneToOne'`, i.e. the graph starts at the first convolution).
 */
import { OrtModel } from '@aptp/core';
import type { FeatureMatrix } from '../metrics/frechet';
import { concatRows, runEmbedding, sha256File } from './embed';
import { loadRgbImage } from './images';
import { torchBilinearResize } from './resize';
import type { RgbImage } from './resize';

export type InceptionInputRange = 'minusOneToOne' | 'zeroToOne' | 'zeroTo255';

export interface InceptionOptions {
  /** Value range the ONNX graph expects (see the file comment). Default 'minusOneToOne'. */
  inputRange?: InceptionInputRange;
  /** Network input size (default 299). */
  size?: number;
  /** Images per ORT run (default 16). */
  batchSize?: number;
  /** Output to read (default: the model's first output). */
  outputName?: string;
  threads?: number;
}

/** clean-fid legacy_pytorch preprocessing of one image → CHW float32 [3, size, size] in `inputRange`. */
export function inceptionPreprocess(img: RgbImage, size = 299, inputRange: InceptionInputRange = 'minusOneToOne'): Float32Array {
  const r = torchBilinearResize(img, size, size);
  const hw = size * size;
  const out = new Float32Array(3 * hw);
  for (let i = 0; i < hw; i++) {
    for (let c = 0; c < 3; c++) {
      const v = r.data[i * 3 + c]!;
      out[c * hw + i] = inputRange === 'zeroTo255' ? v : inputRange === 'zeroToOne' ? v / 255 : 2 * (v / 255) - 1;
    }
  }
  return out;
}

export class InceptionFeatures {
  private constructor(
    private readonly model: OrtModel,
    readonly modelFile: string,
    private readonly opts: Required<Omit<InceptionOptions, 'outputName' | 'threads'>> & { outputName?: string },
  ) {}

  /** Loads the ONNX model (one float32 input [B, 3, size, size]; output [B, 2048] or [B, 2048, 1, 1]). */
  static async load(modelFile: string, options: InceptionOptions = {}): Promise<InceptionFeatures> {
    const model = await OrtModel.load(modelFile, { intraOpNumThreads: options.threads });
    return new InceptionFeatures(model, modelFile, {
      inputRange: options.inputRange ?? 'minusOneToOne',
      size: options.size ?? 299,
      batchSize: Math.max(1, options.batchSize ?? 16),
      outputName: options.outputName,
    });
  }

  /** Identity of the features for cache keys: model bytes + preprocessing. */
  async cacheKey(): Promise<string> {
    return JSON.stringify({ kind: 'inception', model: await sha256File(this.modelFile), pre: 'clean-fid legacy_pytorch', ...this.opts });
  }

  /** Features of in-memory images. */
  async extract(images: readonly RgbImage[], signal?: AbortSignal): Promise<FeatureMatrix> {
    const parts: FeatureMatrix[] = [];
    let dim = 0;
    const { size, batchSize, inputRange } = this.opts;
    const chw = 3 * size * size;
    for (let b0 = 0; b0 < images.length; b0 += batchSize) {
      signal?.throwIfAborted();
      const batch = images.slice(b0, b0 + batchSize);
      const x = new Float32Array(batch.length * chw);
      batch.forEach((img, i) => x.set(inceptionPreprocess(img, size, inputRange), i * chw));
      const f = await runEmbedding(this.model, { [this.model.inputNames[0]!]: { data: x, dims: [batch.length, 3, size, size] } }, batch.length, this.opts.outputName);
      dim = f.dim;
      parts.push(f);
    }
    return concatRows(parts, dim);
  }

  /** Features of image files (.npy / png / jpg), read batch by batch. */
  async extractFiles(files: readonly string[], onProgress?: (done: number, total: number) => void, signal?: AbortSignal): Promise<FeatureMatrix> {
    const parts: FeatureMatrix[] = [];
    let dim = 0;
    for (let b0 = 0; b0 < files.length; b0 += this.opts.batchSize) {
      const imgs = await Promise.all(files.slice(b0, b0 + this.opts.batchSize).map((f) => loadRgbImage(f)));
      const f = await this.extract(imgs, signal);
      dim = f.dim;
      parts.push(f);
      onProgress?.(Math.min(files.length, b0 + this.opts.batchSize), files.length);
    }
    return concatRows(parts, dim);
  }

  async dispose(): Promise<void> {
    await this.model.dispose();
  }
}
