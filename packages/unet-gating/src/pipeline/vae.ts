import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { AptpError, ConfigError, InputError, NumericError, OrtModel, ShapeError, defaultOrtThreads, type Rng } from '@aptp/core';
import type { HostArray } from '../engines/engine';

/**
 * Pixels ↔ the UNet's sample space. Decoding (below) turns the sampler's final sample into pixels; encoding
 * (`OrtVaeEncoder`, further down) turns training images into x0 (APTP.md §5, §7).
 *
 * Decoding (APTP.md §9, §11). Latent models (Stable Diffusion) decode with the
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

/** `vae_{decoder,encoder}/config.json`: the fields of diffusers' `AutoencoderKL` config used here (others ignored). */
const vaeConfigSchema = z.object({
  in_channels: z.number().int().positive().default(3).describe('image channels'),
  scaling_factor: z.number().positive().default(0.18215).describe('latent scale (SD 2.1: 0.18215)'),
  shift_factor: z.number().nullable().default(null).describe('latent shift (SD 3 / Flux; absent in SD 2.1)'),
  latent_channels: z.number().int().positive().default(4),
  block_out_channels: z.array(z.number().int().positive()).min(1).default([128, 256, 512, 512]).describe('2^(n−1) = spatial factor'),
});
export type VaeConfig = z.infer<typeof vaeConfigSchema>;
export type VaeDecoderConfig = VaeConfig;

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
      const found = `inputs ${model.inputNames.join(', ')}; outputs ${model.outputNames.join(', ')}`;
      await model.dispose();
      throw new InputError('not a VAE decoder (one latent input and an image output expected)', { code: 'E_FORMAT', file: modelFile, expected: `input ${INPUT_NAMES.join(' | ')}; output ${OUTPUT_NAMES.join(' | ')}`, found });
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
 * Encoding training images into x0 (APTP.md §5 notation, §7.3; diffusers' training scripts):
 *   x0 = scaling_factor · (z − shift_factor),  z = `vae.encode(pixel_values).latent_dist.sample()`
 * (shift_factor absent in SD 2.1: x0 = 0.18215·z). The encoder runs from `vae_encoder/model.onnx` through
 * onnxruntime-node, one image at a time (so an item's latent never depends on the rest of its batch). Accepted graphs:
 *
 * - input: `sample` (Optimum and diffusers' ONNX export), `images` or `pixel_values`, or the graph's only input:
 *   `[1, in_channels (3), H, W]` in [−1, 1]; H and W must be multiples of the scale factor f = 2^(len(block_out_channels)−1).
 * - output `latent_parameters` `[1, 2C, H/f, W/f]` (Optimum's current export: the posterior's `parameters`, i.e.
 *   mean ‖ logvar on the channel axis), or the two outputs `mean` and `logvar` `[1, C, H/f, W/f]`: the diagonal
 *   Gaussian of diffusers' `DiagonalGaussianDistribution` (logvar clamped to [−30, 20], std = exp(logvar / 2)).
 *   `posterior: 'sample'` (default; what diffusers' training scripts and the APTP reference do, `.sample()`) draws
 *   z = mean + std·ε with ε from the caller's per-item generator (keyed noise, never `tf.random`); `'mean'` takes
 *   z = mean (`.mode()`).
 * - else output `latent_sample` `[1, C, H/f, W/f]` (diffusers' `convert_stable_diffusion_checkpoint_to_onnx.py` and older
 *   Optimum exports): z is whatever the graph computes, normally a `.sample()` drawn *inside* the graph by ORT's
 *   RandomNormalLike — neither keyed nor reproducible; prefer an export with `latent_parameters`. `'mean'` is refused
 *   for such a graph (the mean is not available).
 *
 * C = `latent_channels` of the config (SD 2.1: 4, f = 8, scaling 0.18215; these SD 2.1 values apply when
 * `config.json` is absent). Output sizes other than `[1, C(·2), H/f, W/f]` are a `ShapeError` naming the output.
 */
export const VAE_ENCODER_FILES = { dir: 'vae_encoder', model: 'model.onnx', config: 'config.json' } as const;

/** How z is taken from the posterior N(mean, exp(logvar)): a keyed sample (diffusers `.sample()`) or the mean. */
export type LatentPosterior = 'sample' | 'mean';

export interface ImageEncodeOptions {
  /**
   * One generator per item, keyed by the caller (e.g. `Rng.forKey(seed, 'prune', step, sampleId, 'vae')`): item b's ε
   * is `rngs[b].normal(C·h·w)`. Required when the encoder samples from the posterior; ignored otherwise.
   */
  rngs?: readonly Rng[];
  signal?: AbortSignal;
}

export interface ImageEncoder {
  /** `vae` (ONNX VAE encoder) or `pixel` (identity). */
  readonly kind: 'vae' | 'pixel';
  /** Image pixels per latent cell along each side (8 for the SD VAE, 1 in pixel space). */
  readonly scaleFactor: number;
  /** Channels of the latents it returns (4 for the SD VAE); null: those of the images (pixel space). */
  readonly latentChannels: number | null;
  /** Images `[B, 3, H, W]` in [−1, 1] → x0 `[B, C, H/f, W/f]` (scaled latents, or the images themselves). */
  encode(images: HostArray, options?: ImageEncodeOptions): Promise<HostArray>;
  /** Releases the model. Idempotent. */
  dispose(): Promise<void>;
}

export interface VaeEncoderOptions {
  /** Default `sample` (diffusers' training scripts, APTP.md §5). */
  posterior?: LatentPosterior;
  /** ORT intra-op threads (default `defaultOrtThreads()`). */
  intraOpNumThreads?: number;
}

const ENCODER_INPUT_NAMES = ['sample', 'images', 'pixel_values'];
const LATENT_PARAMETERS = 'latent_parameters';
const LATENT_MEAN = 'mean';
const LATENT_LOGVAR = 'logvar';
const LATENT_SAMPLE = 'latent_sample';
/** diffusers `DiagonalGaussianDistribution`: `torch.clamp(logvar, -30.0, 20.0)`. */
const LOGVAR_MIN = -30;
const LOGVAR_MAX = 20;

/** What the encoder graph returns (see `OrtVaeEncoder`). */
type EncoderOutputs = { kind: 'parameters'; output: string } | { kind: 'meanLogvar'; mean: string; logvar: string } | { kind: 'sample'; output: string };

/** The SD VAE encoder on onnxruntime-node. */
export class OrtVaeEncoder implements ImageEncoder {
  readonly kind = 'vae' as const;
  readonly scaleFactor: number;
  readonly latentChannels: number;

  private constructor(
    readonly model: OrtModel,
    readonly config: VaeConfig,
    readonly posterior: LatentPosterior,
    private readonly inputName: string,
    private readonly outputs: EncoderOutputs,
  ) {
    this.scaleFactor = 2 ** (config.block_out_channels.length - 1);
    this.latentChannels = config.latent_channels;
  }

  /** Loads `dir/model.onnx` (+ optional `dir/config.json`; SD 2.1 values when absent). */
  static async load(dir: string, options: VaeEncoderOptions = {}): Promise<OrtVaeEncoder> {
    const modelFile = path.join(dir, VAE_ENCODER_FILES.model);
    if (!fs.existsSync(modelFile)) {
      throw new InputError('VAE encoder folder is incomplete', { code: 'E_FILE_MISSING', file: modelFile, expected: `${dir}/{${VAE_ENCODER_FILES.model}, ${VAE_ENCODER_FILES.config} (optional)}`, found: 'missing' });
    }
    const posterior = options.posterior ?? 'sample';
    if (posterior !== 'sample' && posterior !== 'mean') {
      throw new ConfigError('unknown posterior mode', { code: 'E_CONFIG_VALUE', field: 'posterior', expected: 'sample | mean', found: posterior });
    }
    const config = readVaeConfig(path.join(dir, VAE_ENCODER_FILES.config));
    const model = await OrtModel.load(modelFile, { intraOpNumThreads: options.intraOpNumThreads ?? defaultOrtThreads() });
    const inputName = pick(model.inputNames, ENCODER_INPUT_NAMES);
    const outputs = encoderOutputs(model.outputNames);
    if (inputName === null || outputs === null) {
      const found = `inputs ${model.inputNames.join(', ')}; outputs ${model.outputNames.join(', ')}`;
      await model.dispose();
      throw new InputError('not a VAE encoder (one image input and the posterior or a latent sample as output expected)', {
        code: 'E_FORMAT',
        file: modelFile,
        expected: `input ${ENCODER_INPUT_NAMES.join(' | ')}; output ${LATENT_PARAMETERS} | ${LATENT_MEAN} + ${LATENT_LOGVAR} | ${LATENT_SAMPLE}`,
        found,
      });
    }
    if (outputs.kind === 'sample' && posterior === 'mean') {
      await model.dispose();
      throw new ConfigError(`this VAE encoder returns a latent sample (${LATENT_SAMPLE}), not the posterior, so its mean is not available`, {
        code: 'E_CONFIG_VALUE',
        file: modelFile,
        field: 'posterior',
        expected: `sample, or an export with output ${LATENT_PARAMETERS}`,
        found: 'mean',
      });
    }
    return new OrtVaeEncoder(model, config, posterior, inputName, outputs);
  }

  /** True when `encode` draws z from the posterior with the caller's generators. */
  get needsNoise(): boolean {
    return this.posterior === 'sample' && this.outputs.kind !== 'sample';
  }

  async encode(images: HostArray, options: ImageEncodeOptions = {}): Promise<HostArray> {
    const [b, c, H, W] = checkSample(images, 'images');
    const f = this.scaleFactor;
    if (c !== this.config.in_channels || H % f !== 0 || W % f !== 0) {
      throw new ShapeError('images do not fit the VAE encoder', { code: 'E_SHAPE', file: this.model.name, field: 'images', expected: `[B, ${this.config.in_channels}, H, W] with H, W multiples of ${f}`, found: images.dims });
    }
    const rngs = options.rngs;
    if (this.needsNoise && (rngs === undefined || rngs.length !== b)) {
      throw new InputError('sampling the VAE posterior needs one keyed generator per image', { code: 'E_INPUT', file: this.model.name, field: 'rngs', expected: b, found: rngs?.length ?? 'none' });
    }
    const C = this.latentChannels;
    const h = H / f;
    const w = W / f;
    const per = c * H * W;
    const lat = C * h * w;
    const { scaling_factor: scale, shift_factor: shift } = this.config;
    const out = new Float32Array(b * lat);
    for (let i = 0; i < b; i++) {
      throwIfAborted(options.signal);
      const feed = { [this.inputName]: { data: images.data.slice(i * per, (i + 1) * per), dims: [1, c, H, W] } };
      const o = this.outputs;
      const names = o.kind === 'meanLogvar' ? [o.mean, o.logvar] : [o.output];
      const r = await this.model.run(feed, names);
      const z = out.subarray(i * lat, (i + 1) * lat);
      if (o.kind === 'sample') {
        z.set(this.checkOutput(r[o.output]!.data, r[o.output]!.dims, o.output, C, h, w));
      } else {
        let mean: Float32Array;
        let logvar: Float32Array;
        if (o.kind === 'parameters') {
          // parameters = mean ‖ logvar on the channel axis (torch.chunk(parameters, 2, dim=1))
          const p = this.checkOutput(r[o.output]!.data, r[o.output]!.dims, o.output, 2 * C, h, w);
          mean = p.subarray(0, lat);
          logvar = p.subarray(lat, 2 * lat);
        } else {
          mean = this.checkOutput(r[o.mean]!.data, r[o.mean]!.dims, o.mean, C, h, w);
          logvar = this.checkOutput(r[o.logvar]!.data, r[o.logvar]!.dims, o.logvar, C, h, w);
        }
        if (this.posterior === 'mean') {
          z.set(mean);
        } else {
          const eps = rngs![i]!.normal(lat);
          for (let k = 0; k < lat; k++) {
            const std = Math.exp(0.5 * Math.min(LOGVAR_MAX, Math.max(LOGVAR_MIN, logvar[k]!)));
            z[k] = mean[k]! + std * eps[k]!;
          }
        }
      }
      // diffusers: latents = (latents − shift_factor) · scaling_factor
      for (let k = 0; k < lat; k++) z[k] = (z[k]! - (shift ?? 0)) * scale;
    }
    return { data: out, dims: [b, C, h, w] };
  }

  private checkOutput(data: unknown, dims: readonly number[], name: string, channels: number, h: number, w: number): Float32Array {
    if (!(data instanceof Float32Array) || dims.length !== 4 || dims[0] !== 1 || dims[1] !== channels || dims[2] !== h || dims[3] !== w) {
      throw new ShapeError(`VAE encoder output ${name} has an unexpected shape (config latent_channels / block_out_channels vs the graph)`, {
        code: 'E_SHAPE',
        file: this.model.name,
        field: name,
        expected: `float32 [1, ${channels}, ${h}, ${w}]`,
        found: `${data instanceof Float32Array ? 'float32' : 'non-float32'} [${dims.join(', ')}]`,
      });
    }
    return data;
  }

  async dispose(): Promise<void> {
    await this.model.dispose();
  }
}

/** Pixel space: x0 is the image itself (a copy). */
export class PixelEncoder implements ImageEncoder {
  readonly kind = 'pixel' as const;
  readonly scaleFactor = 1;
  readonly latentChannels = null;

  async encode(images: HostArray): Promise<HostArray> {
    checkSample(images, 'images');
    return { data: images.data.slice(), dims: [...images.dims] };
  }

  async dispose(): Promise<void> {}
}

function encoderOutputs(names: readonly string[]): EncoderOutputs | null {
  if (names.includes(LATENT_PARAMETERS)) return { kind: 'parameters', output: LATENT_PARAMETERS };
  if (names.includes(LATENT_MEAN) && names.includes(LATENT_LOGVAR)) return { kind: 'meanLogvar', mean: LATENT_MEAN, logvar: LATENT_LOGVAR };
  if (names.includes(LATENT_SAMPLE)) return { kind: 'sample', output: LATENT_SAMPLE };
  return null;
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

function readVaeConfig(file: string): VaeConfig {
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
