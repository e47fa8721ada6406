import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { AptpError, ConfigError, InputError, NumericError, OrtModel, ShapeError, defaultOrtThreads } from '@aptp/core';
import type { HostArray } from '../engines/engine';

/**
 * Turning the sampler's final sample into pixels (APTP.md §9, §11). Latent models (Stable Diffusion) decode with the
 * frozen VAE decoder, run from `vae_decoder/model.onnx` through onnxruntime-node (the usual Optimum/diffusers ONNX
 * layout: input `latent_sample [B, 4, h, w]`, output `sample [B, 3, 8h, 8w]`); like diffusers, latents are divided by
 * `scaling_factor` (SD 2.1: 0.18215) and, if the config has one, shifted by `shift_factor` first. Pixel-space models
 * (the synthetic world) need no decoder: the sample is the image.
 *
 * Both return images in the model's range, about [−1, 1]; `toRgb8` maps them to 8-bit RGB as diffusers does.
 */
export const VAE_DECODER_FILES = { model: 'model.onnx', config: 'config.json' } as const;

export interface ImageDecoder {
  /** `vae` (ONNX VAE decoder) or `pixel` (identity). */
  readonly kind: 'vae' | 'pixel';
  /** Image pixels per sample cell along each side (8 for the SD VAE, 1 in pixel space). */
  readonly scaleFactor: number;
  /** Channels of the sample it takes (4 for the SD VAE); null: any (pixel space). */
  readonly latentChannels: number | null;
  /**
   * Sample `[B, C, h, w]` → images `[B, 3 (or C), h·f, w·f]`, about [−1, 1]. Items are decoded one at a time, so an
   * image never depends on the other items of the batch (and a 768-px SD decode stays within memory).
   */
  decode(sample: HostArray, signal?: AbortSignal): Promise<HostArray>;
  /** Releases the model. Idempotent. */
  dispose(): Promise<void>;
}

/** `vae_decoder/config.json`: the fields of diffusers' `AutoencoderKL` config the decoder needs (others ignored). */
const vaeConfigSchema = z.object({
  scaling_factor: z.number().positive().default(0.18215).describe('latent scale (SD 2.1: 0.18215)'),
  shift_factor: z.number().nullable().default(null).describe('latent shift (SD 3 / Flux; absent in SD 2.1)'),
  latent_channels: z.number().int().positive().default(4),
  block_out_channels: z.array(z.number().int().positive()).min(1).default([128, 256, 512, 512]).describe('2^(n−1) = spatial factor'),
});
export type VaeDecoderConfig = z.infer<typeof vaeConfigSchema>;

export interface VaeDecoderOptions {
  /** ORT intra-op threads (default `defaultOrtThreads()`). */
  intraOpNumThreads?: number;
}

const INPUT_NAMES = ['latent_sample', 'latents', 'z'];
const OUTPUT_NAMES = ['sample', 'images', 'image'];

/** The SD VAE decoder on onnxruntime-node. */
export class OrtVaeDecoder implements ImageDecoder {
  readonly kind = 'vae' as const;
  readonly scaleFactor: number;
  readonly latentChannels: number;

  private constructor(
    readonly model: OrtModel,
    readonly config: VaeDecoderConfig,
    private readonly inputName: string,
    private readonly outputName: string,
  ) {
    this.scaleFactor = 2 ** (config.block_out_channels.length - 1);
    this.latentChannels = config.latent_channels;
  }

  /** Loads `dir/model.onnx` (+ optional `dir/config.json`; SD 2.1 values when absent). */
  static async load(dir: string, options: VaeDecoderOptions = {}): Promise<OrtVaeDecoder> {
    const modelFile = path.join(dir, VAE_DECODER_FILES.model);
    if (!fs.existsSync(modelFile)) {
      throw new InputError('VAE decoder folder is incomplete', { code: 'E_FILE_MISSING', file: modelFile, expected: `${dir}/{${VAE_DECODER_FILES.model}, ${VAE_DECODER_FILES.config} (optional)}`, found: 'missing' });
    }
    const config = readVaeConfig(path.join(dir, VAE_DECODER_FILES.config));
    const model = await OrtModel.load(modelFile, { intraOpNumThreads: options.intraOpNumThreads ?? defaultOrtThreads() });
    const inputName = pick(model.inputNames, INPUT_NAMES);
    const outputName = pick(model.outputNames, OUTPUT_NAMES);
    if (inputName === null || outputName === null) {
      await model.dispose();
      throw new InputError('not a VAE decoder (one latent input and an image output expected)', { code: 'E_FORMAT', file: modelFile, expected: `input ${INPUT_NAMES.join(' | ')}; output ${OUTPUT_NAMES.join(' | ')}`, found: `inputs ${model.inputNames.join(', ')}; outputs ${model.outputNames.join(', ')}` });
    }
    return new OrtVaeDecoder(model, config, inputName, outputName);
  }

  async decode(sample: HostArray, signal?: AbortSignal): Promise<HostArray> {
    const [b, c, h, w] = checkSample(sample, 'sample');
    if (c !== this.latentChannels) {
      throw new ShapeError('latent channels differ from the VAE decoder', { code: 'E_SHAPE', file: this.model.name, field: 'sample', expected: `[B, ${this.latentChannels}, h, w]`, found: sample.dims });
    }
    const { scaling_factor: scale, shift_factor: shift } = this.config;
    const per = c * h * w;
    const item = new Float32Array(per);
    let out: Float32Array | null = null;
    let outDims: number[] = [];
    for (let i = 0; i < b; i++) {
      throwIfAborted(signal);
      // diffusers: latents = latents / scaling_factor (+ shift_factor)
      const src = sample.data.subarray(i * per, (i + 1) * per);
      for (let k = 0; k < per; k++) item[k] = src[k]! / scale + (shift ?? 0);
      const r = (await this.model.run({ [this.inputName]: { data: item, dims: [1, c, h, w] } }, [this.outputName]))[this.outputName]!;
      if (r.dims.length !== 4 || r.dims[0] !== 1) {
        throw new ShapeError('VAE decoder output must be [1, C, H, W]', { code: 'E_SHAPE', file: this.model.name, field: this.outputName, found: r.dims });
      }
      if (out === null) {
        outDims = [b, ...r.dims.slice(1)];
        out = new Float32Array(outDims.reduce((a, d) => a * d, 1));
      }
      out.set(r.data as Float32Array, i * (out.length / b));
    }
    return { data: out ?? new Float32Array(0), dims: outDims.length ? outDims : [0, 3, h * this.scaleFactor, w * this.scaleFactor] };
  }

  async dispose(): Promise<void> {
    await this.model.dispose();
  }
}

/** Pixel space: the sample is the image (a copy). */
export class PixelDecoder implements ImageDecoder {
  readonly kind = 'pixel' as const;
  readonly scaleFactor = 1;
  readonly latentChannels = null;

  async decode(sample: HostArray): Promise<HostArray> {
    checkSample(sample, 'sample');
    return { data: sample.data.slice(), dims: [...sample.dims] };
  }

  async dispose(): Promise<void> {}
}

/**
 * Images `[B, C, H, W]` (about [−1, 1]; C = 3, or 1 for grey) → 8-bit interleaved RGB, one `[H, W, 3]` array per
 * item: `round(clamp(x/2 + 0.5, 0, 1)·255)` (diffusers `VaeImageProcessor.postprocess` + `numpy_to_pil`). A
 * non-finite pixel is an error naming the item (exit code 4), not a black pixel.
 */
export function toRgb8(images: HostArray): Uint8Array[] {
  const [b, c, h, w] = checkSample(images, 'images');
  if (c !== 3 && c !== 1) throw new ShapeError('images must have 3 (RGB) or 1 (grey) channels', { code: 'E_SHAPE', field: 'images', expected: '[B, 3, H, W]', found: images.dims });
  const hw = h * w;
  const out: Uint8Array[] = [];
  for (let i = 0; i < b; i++) {
    const rgb = new Uint8Array(hw * 3);
    for (let ch = 0; ch < 3; ch++) {
      const plane = images.data.subarray((i * c + (c === 1 ? 0 : ch)) * hw, (i * c + (c === 1 ? 0 : ch) + 1) * hw);
      for (let p = 0; p < hw; p++) {
        const x = plane[p]!;
        if (!Number.isFinite(x)) {
          throw new NumericError('non-finite pixel in a generated image', { code: 'E_NONFINITE', field: `images[${i}]`, found: x });
        }
        const v = Math.min(1, Math.max(0, x / 2 + 0.5));
        rgb[p * 3 + ch] = Math.round(v * 255);
      }
    }
    out.push(rgb);
  }
  return out;
}

function readVaeConfig(file: string): VaeDecoderConfig {
  if (!fs.existsSync(file)) return vaeConfigSchema.parse({});
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new InputError('not valid JSON', { code: 'E_JSON', file, cause: err });
  }
  const r = vaeConfigSchema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw new ConfigError(issue.message, { code: 'E_CONFIG_FIELD', file, field: issue.path.join('.'), cause: r.error });
  }
  return r.data;
}

function pick(names: readonly string[], preferred: readonly string[]): string | null {
  for (const p of preferred) if (names.includes(p)) return p;
  return names.length === 1 ? names[0]! : null;
}

function checkSample(t: HostArray, field: string): [number, number, number, number] {
  const n = t.dims.reduce((a, d) => a * d, 1);
  if (t.dims.length !== 4 || n !== t.data.length) {
    throw new ShapeError('expected a [B, C, H, W] array', { code: 'E_SHAPE', field, expected: '[B, C, H, W] with matching data length', found: `dims [${t.dims.join(',')}], ${t.data.length} values` });
  }
  return t.dims as unknown as [number, number, number, number];
}

/** Throws an `AptpError` (code `E_ABORTED`) when the signal is aborted. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) {
    throw new AptpError('generation aborted', { code: 'E_ABORTED', cause: signal.reason });
  }
}
