import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import {
  AptpError,
  InputError,
  NumericError,
  Rng,
  ShapeError,
  createScheduler,
  readSchedulerConfigFile,
  type ProgressCallback,
  type SamplerClassName,
  type Scheduler,
} from '@aptp/core';
import { readUNetConfig, type UNetConfig } from '../config';
import type { HostArray, UNetEngine } from '../engines/engine';
import { OrtUNetEngine } from '../engines/ort';
import { TfjsUNetEngine } from '../engines/tfjs';
import { ONNX_FILES, exportUNetDir, unetWeightBytes } from '../export/onnx';
import { loadExpert } from '../experts';
import { UNET_FILES, loadUNet } from '../unet';
import { OrtVaeDecoder, PixelDecoder, toRgb8, throwIfAborted, type ImageDecoder } from './vae';
import { ClipTextConditioner } from './clipText';
import { CONDITIONING_FILES, HashedTextConditioner, type TextConditioner } from './conditioning';

/**
 * Text-to-image sampling with any UNet engine (APTP.md §9; diffusers `StableDiffusionPipeline.__call__`):
 *
 *   1. text: each prompt's conditioning `[S, D]` (encoded alone, so it never depends on the batch) and, with
 *      classifier-free guidance (w > 1), the empty prompt's (diffusers' negative prompt "").
 *   2. x_T: per prompt, `Rng.forKey(seed, 'latents')` standard normals `[C, h, w]` × the sampler's initial σ
 *      (h = height / f, f = the decoder's scale factor: 8 for the SD VAE, 1 in pixel space).
 *   3. for each timestep t of the sampler (DDIM, PNDM or DPM-Solver++, from `scheduler_config.json`): one UNet call on
 *      `[uncond ‖ cond]` (batch 2B; B without guidance), ε̂ = ε_u + w_b·(ε_c − ε_u) per item, x ← step(ε̂, t, x).
 *      DDIM with η > 0 draws its noise z per prompt from `Rng.forKey(seed, 'ddim-variance', step)`.
 *   4. decode (VAE, item by item; or the sample itself in pixel space) → 8-bit RGB.
 *
 * Requests with different step counts, sizes or guidance on/off cannot share UNet calls; `generate` runs each such
 * group as its own batch (`planGroups`), keeping the caller's order in the result. Per-item guidance scales may differ
 * inside a group. Every per-step coefficient is per timestep and every random number is keyed by the prompt's seed, so
 * an image does not depend on which other requests share its batch.
 */

/** One image to generate (all fields resolved). */
export interface TextToImageRequest {
  prompt: string;
  seed: number;
  /** Sampler steps (diffusers `num_inference_steps`). */
  steps: number;
  /** Classifier-free guidance scale w (`guidance_scale`; ≤ 1: no guidance, one UNet batch of B). */
  guidance: number;
  /** Image size in pixels (multiples of the decoder's scale factor). */
  width: number;
  height: number;
}

export interface TextToImageParts {
  conditioner: TextConditioner;
  decoder: ImageDecoder;
  /** `scheduler_config.json` as read (snake_case) and its file (for errors). */
  scheduler: { raw: Record<string, unknown>; file?: string };
  /** Channels of the sample x (the UNet's in_channels). */
  sampleChannels: number;
}

export interface TextToImageOptions {
  /** Sampler class (default `PNDMScheduler`, APTP's evaluation sampler, §9). */
  scheduler?: SamplerClassName;
  /** DDIM η (default 0). */
  eta?: number;
  signal?: AbortSignal;
  /** Called after every UNet call (`done` of `total` calls of the current group); `label` names the group. */
  onProgress?: ProgressCallback;
  /** Prefix of the progress label (e.g. `expert 3`). */
  label?: string;
}

export interface GeneratedImageRgb {
  /** 8-bit RGB, `[height, width, 3]` row-major. */
  rgb: Uint8Array;
  width: number;
  height: number;
  /** Wall time of the group that produced it (text + denoising + decoding), ms. */
  latencyMs: number;
  /** Requests in that group. */
  groupSize: number;
  /** UNet calls made for it. */
  unetCalls: number;
}

/** Groups request indices that can share UNet calls: same steps, size and guidance on/off (in first-seen order). */
export function planGroups(requests: readonly TextToImageRequest[]): number[][] {
  const groups = new Map<string, number[]>();
  requests.forEach((r, i) => {
    const key = `${r.steps}|${r.width}x${r.height}|${r.guidance > 1 ? 'cfg' : 'nocfg'}`;
    const g = groups.get(key);
    if (g) g.push(i);
    else groups.set(key, [i]);
  });
  return [...groups.values()];
}

/** `ε_u + w_b·(ε_c − ε_u)` per item b of `[2B, …]` (uncond first) → `[B, …]`. */
export function combineGuidancePerItem(both: Float32Array, scales: readonly number[], out = new Float32Array(both.length / 2)): Float32Array {
  const n = both.length / 2;
  const per = n / scales.length;
  for (let b = 0; b < scales.length; b++) {
    const w = scales[b]!;
    for (let k = b * per; k < (b + 1) * per; k++) {
      const u = both[k]!;
      out[k] = u + w * (both[n + k]! - u);
    }
  }
  return out;
}

/** The initial sample of one request: `[C, h, w]` standard normals from `Rng.forKey(seed, 'latents')`. */
export function initialNoise(seed: number, channels: number, height: number, width: number): Float32Array {
  return Rng.forKey(seed, 'latents').normal(channels * height * width);
}

export class TextToImagePipeline {
  private uncond: HostArray | null = null;
  private readonly cache = new Map<string, HostArray>();
  private disposed = false;

  constructor(
    readonly parts: TextToImageParts,
    /** The full (unpruned) UNet, when loaded with the pipeline. Owned by the pipeline. */
    readonly unet: UNetEngine | null = null,
    private readonly owned: { conditioner: boolean; decoder: boolean } = { conditioner: true, decoder: true },
  ) {}

  get scaleFactor(): number {
    return this.parts.decoder.scaleFactor;
  }

  /** Generates one image per request with `engine` (a pruned expert or the full UNet); result i ↔ request i. */
  async generate(engine: UNetEngine, requests: readonly TextToImageRequest[], options: TextToImageOptions = {}): Promise<GeneratedImageRgb[]> {
    if (this.disposed) throw new InputError('the text-to-image pipeline has been disposed', { code: 'E_DISPOSED' });
    requests.forEach((r, i) => this.checkRequest(r, i));
    const out = new Array<GeneratedImageRgb>(requests.length);
    const groups = planGroups(requests);
    for (const [gi, idx] of groups.entries()) {
      const label = `${options.label ?? 'generate'}${groups.length > 1 ? ` group ${gi + 1}/${groups.length}` : ''}`;
      const images = await this.generateGroup(engine, idx.map((i) => requests[i]!), { ...options, label });
      idx.forEach((i, k) => (out[i] = images[k]!));
    }
    return out;
  }

  /** One group (same steps, size, guidance on/off). */
  private async generateGroup(engine: UNetEngine, reqs: readonly TextToImageRequest[], options: TextToImageOptions): Promise<GeneratedImageRgb[]> {
    const start = performance.now();
    const { steps, width, height } = reqs[0]!;
    const cfg = reqs[0]!.guidance > 1;
    const B = reqs.length;
    const f = this.scaleFactor;
    const [C, h, w] = [this.parts.sampleChannels, height / f, width / f];
    const per = C * h * w;
    const shape = [B, C, h, w];
    const signal = options.signal;

    // 1. text conditioning [2B or B, S, D] (uncond rows first)
    const cond = await Promise.all(reqs.map((r) => this.condition(r.prompt, signal)));
    const uncond = cfg ? await this.unconditional(signal) : null;
    const [S, D] = [cond[0]!.dims[1]!, cond[0]!.dims[2]!];
    const rows = [...(uncond ? reqs.map(() => uncond) : []), ...cond];
    const ehs = new Float32Array(rows.length * S * D);
    rows.forEach((r, i) => ehs.set(r.data, i * S * D));
    const ehsArray: HostArray = { data: ehs, dims: [rows.length, S, D] };

    // 2. sampler and x_T
    const scheduler: Scheduler = createScheduler(this.parts.scheduler.raw, { className: options.scheduler ?? 'PNDMScheduler', file: this.parts.scheduler.file });
    const eta = options.eta ?? 0;
    if (eta !== 0 && scheduler.className !== 'DDIMScheduler') {
      throw new InputError('eta applies to the DDIM sampler only', { code: 'E_ARGUMENT', field: 'eta', expected: `0 with ${scheduler.className}`, found: eta });
    }
    scheduler.setTimesteps(steps);
    const timesteps = [...scheduler.timesteps];
    const noise = new Float32Array(B * per);
    reqs.forEach((r, b) => {
      const z = initialNoise(r.seed, C, h, w);
      for (let k = 0; k < per; k++) noise[b * per + k] = z[k]! * scheduler.initNoiseSigma;
    });
    let x: tf.Tensor = tf.tensor(noise, shape, 'float32');
    const unetSample = new Float32Array((cfg ? 2 : 1) * B * per);
    const unetDims = [(cfg ? 2 : 1) * B, C, h, w];
    const scales = reqs.map((r) => r.guidance);
    const guided = cfg ? new Float32Array(B * per) : null;

    // 3. denoising loop: one UNet call per timestep; tensors: x plus the sampler's history, flat across steps
    try {
      for (let i = 0; i < timesteps.length; i++) {
        throwIfAborted(signal);
        const t = timesteps[i]!;
        const input = scheduler.scaleModelInput(x, t);
        let xs: Float32Array;
        try {
          xs = (await input.data()) as Float32Array;
        } finally {
          input.dispose();
        }
        unetSample.set(xs, 0);
        if (cfg) unetSample.set(xs, B * per);
        const pred = await engine.predict({ sample: { data: unetSample, dims: unetDims }, timestep: t, encoderHiddenStates: ehsArray });
        if (pred.data.length !== unetSample.length) {
          throw new ShapeError('UNet output must match the sample (out_channels = in_channels)', { code: 'E_SHAPE', field: 'unet output', expected: unetDims, found: pred.dims });
        }
        const eps = tf.tensor(cfg ? combineGuidancePerItem(pred.data, scales, guided!) : pred.data, shape, 'float32');
        const z = eta > 0 ? this.varianceNoise(reqs, i, per, shape) : undefined;
        let next: tf.Tensor;
        try {
          next = scheduler.step(eps, t, x, eta > 0 ? { eta, varianceNoise: z } : {}).prevSample;
        } finally {
          eps.dispose();
          z?.dispose();
        }
        x.dispose();
        x = next;
        options.onProgress?.({ label: options.label ?? 'generate', done: i + 1, total: timesteps.length, info: { t } });
      }
      // 4. decode
      const final = (await x.data()) as Float32Array;
      throwIfAborted(signal);
      const images = await this.parts.decoder.decode({ data: final, dims: shape }, signal);
      let rgb: Uint8Array[];
      try {
        rgb = toRgb8(images);
      } catch (err) {
        if (err instanceof NumericError) {
          const b = Number(/\[(\d+)\]/.exec(err.field ?? '')?.[1] ?? -1);
          throw new NumericError('the sampler produced a non-finite image', { code: 'E_NONFINITE', field: `prompt ${JSON.stringify(reqs[b]?.prompt ?? '?')} (seed ${reqs[b]?.seed ?? '?'})`, cause: err });
        }
        throw err;
      }
      const latencyMs = performance.now() - start;
      return rgb.map((im) => ({ rgb: im, width: images.dims[3]!, height: images.dims[2]!, latencyMs, groupSize: B, unetCalls: timesteps.length }));
    } finally {
      x.dispose();
      scheduler.dispose();
    }
  }

  /** DDIM's z for one step `[B, C, h, w]`, drawn per prompt. */
  private varianceNoise(reqs: readonly TextToImageRequest[], step: number, per: number, shape: number[]): tf.Tensor {
    const z = new Float32Array(reqs.length * per);
    reqs.forEach((r, b) => z.set(Rng.forKey(r.seed, 'ddim-variance', step).normal(per), b * per));
    return tf.tensor(z, shape, 'float32');
  }

  /** `[1, S, D]` conditioning of one prompt (cached; encoded alone). */
  private async condition(prompt: string, signal?: AbortSignal): Promise<HostArray> {
    const hit = this.cache.get(prompt);
    if (hit) return hit;
    const h = await this.parts.conditioner.embed([prompt], { signal });
    if (h.dims.length !== 3 || h.dims[0] !== 1) throw new ShapeError('the text conditioner must return [B, S, D]', { code: 'E_SHAPE', field: 'conditioning', expected: '[1, S, D]', found: h.dims });
    if (this.cache.size >= 1024) this.cache.delete(this.cache.keys().next().value as string);
    this.cache.set(prompt, h);
    return h;
  }

  private async unconditional(signal?: AbortSignal): Promise<HostArray> {
    this.uncond ??= await this.parts.conditioner.embed([''], { signal });
    return this.uncond;
  }

  private checkRequest(r: TextToImageRequest, i: number): void {
    const f = this.scaleFactor;
    const bad = (field: string, expected: string, found: unknown) => new InputError('bad generation request', { code: 'E_REQUEST', field: `requests[${i}].${field}`, expected, found });
    if (typeof r.prompt !== 'string') throw bad('prompt', 'a string', r.prompt);
    if (!Number.isSafeInteger(r.seed)) throw bad('seed', 'an integer', r.seed);
    if (!(Number.isInteger(r.steps) && r.steps >= 1)) throw bad('steps', 'an integer >= 1', r.steps);
    if (!Number.isFinite(r.guidance)) throw bad('guidance', 'a finite number', r.guidance);
    for (const k of ['width', 'height'] as const) {
      if (!(Number.isInteger(r[k]) && r[k] > 0 && r[k] % f === 0)) throw bad(k, `a positive multiple of ${f}`, r[k]);
    }
  }

  /** Disposes the full UNet and the parts the pipeline owns. Idempotent. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await this.unet?.dispose();
    if (this.owned.decoder) await this.parts.decoder.dispose();
    if (this.owned.conditioner) await this.parts.conditioner.dispose();
    this.cache.clear();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Loading from a model folder

/** Folder parts of a text-to-image model (relative to the model folder). */
export const TEXT_TO_IMAGE_FILES = {
  unet: 'unet',
  scheduler: 'scheduler/scheduler_config.json',
  vaeDecoder: 'vae_decoder',
  textEncoder: 'text_encoder/model.onnx',
} as const;

export type UNetEngineKind = 'auto' | 'ort' | 'tfjs';

export interface LoadUNetEngineOptions {
  /**
   * `auto` (default): ONNX Runtime (the fast engine, STACK.md: 4–10× tfjs-wasm) on the export next to the weights, or on
   * an in-memory export when there is none and the weights fit one protobuf (< 1 GiB), else tfjs; `ort` requires an
   * export folder; `tfjs` the eager model.
   */
  engine?: UNetEngineKind;
  /** A pruned expert folder (`pruneUNetFolder`; read with `loadExpert`). */
  pruned?: boolean;
  onProgress?: ProgressCallback;
}

/** The ONNX export of a UNet folder: `dir/onnx/` or `dir` itself (`model.onnx` + `aptp_onnx.json`), or null. */
export function onnxExportDir(unetDir: string): string | null {
  for (const d of [path.join(unetDir, 'onnx'), unetDir]) {
    if (fs.existsSync(path.join(d, ONNX_FILES.model)) && fs.existsSync(path.join(d, ONNX_FILES.info))) return d;
  }
  return null;
}

/** Largest weights file exported in memory by the `auto` engine (a protobuf cannot exceed 2 GiB). */
const IN_MEMORY_EXPORT_BYTES = 1 << 30;

/** A UNet folder as an engine: ORT on its export (`onnx/`), or the eager tfjs model (the fallback). */
export async function loadUNetEngine(unetDir: string, options: LoadUNetEngineOptions = {}): Promise<UNetEngine> {
  const kind = options.engine ?? 'auto';
  const exportDir = onnxExportDir(unetDir);
  if (kind === 'auto' && exportDir === null && unetWeightBytes(unetDir) < IN_MEMORY_EXPORT_BYTES) {
    return OrtUNetEngine.fromExport(exportUNetDir(unetDir, options.pruned ? { pruned: true } : {}));
  }
  if (kind === 'ort' || (kind === 'auto' && exportDir !== null)) {
    if (exportDir === null) {
      throw new InputError('no ONNX export of this UNet (run the export command, or use the tfjs engine)', { code: 'E_FILE_MISSING', file: unetDir, expected: `${unetDir}/onnx/{${ONNX_FILES.model}, ${ONNX_FILES.info}}`, found: 'missing' });
    }
    return OrtUNetEngine.load(exportDir);
  }
  const label = path.basename(unetDir);
  const onProgress = options.onProgress ? (p: { done: number; total: number }) => options.onProgress!({ label: `load ${label}`, ...p }) : undefined;
  const model = options.pruned ? await loadExpert(unetDir, { onProgress }) : await loadUNet(unetDir, { onProgress });
  return new TfjsUNetEngine(model, true);
}

export interface LoadTextToImageOptions {
  /** Load the full UNet of `unet/` too (default true). */
  unet?: boolean;
  engine?: UNetEngineKind;
  /** A conditioner to use instead of the folder's (e.g. a synthetic-world one); not owned by the pipeline. */
  conditioner?: TextConditioner;
  onProgress?: ProgressCallback;
}

/** Reads `unet/config.json` of a model folder (listing the expected files when it is missing). */
export function readModelUNetConfig(modelDir: string): UNetConfig {
  const file = path.join(modelDir, TEXT_TO_IMAGE_FILES.unet, UNET_FILES.config);
  if (!fs.existsSync(file)) {
    throw new InputError('model folder has no UNet config', { code: 'E_FILE_MISSING', file, expected: `${modelDir}/unet/{${UNET_FILES.config}, ${UNET_FILES.weights}}`, found: 'missing' });
  }
  return readUNetConfig(file);
}

/**
 * The image decoder of a model folder: `vae_decoder/model.onnx` if present; otherwise the model must be pixel-space
 * (UNet out_channels 3 or 1), else the error names the missing VAE decoder.
 */
export async function loadImageDecoder(modelDir: string, unetConfig: UNetConfig): Promise<ImageDecoder> {
  const vaeDir = path.join(modelDir, TEXT_TO_IMAGE_FILES.vaeDecoder);
  if (fs.existsSync(path.join(vaeDir, 'model.onnx'))) {
    const vae = await OrtVaeDecoder.load(vaeDir);
    if (vae.latentChannels !== unetConfig.outChannels) {
      await vae.dispose();
      throw new ShapeError('the VAE decoder does not take the UNet output', { code: 'E_SHAPE', file: path.join(vaeDir, 'config.json'), field: 'latent_channels', expected: unetConfig.outChannels, found: vae.latentChannels });
    }
    return vae;
  }
  if (unetConfig.outChannels === 3 || unetConfig.outChannels === 1) return new PixelDecoder();
  throw new InputError(`a latent model (UNet out_channels ${unetConfig.outChannels}) needs a VAE decoder`, { code: 'E_FILE_MISSING', file: modelDir, expected: `${TEXT_TO_IMAGE_FILES.vaeDecoder}/model.onnx (+ config.json)`, found: 'missing' });
}

/**
 * The text conditioner of a model folder: the CLIP text encoder in ONNX (`text_encoder/model.onnx` + `tokenizer/`,
 * Stable Diffusion) or the synthetic world's weight-free `conditioning/config.json` (`HashedTextConditioner`).
 */
export async function loadTextConditioner(modelDir: string): Promise<TextConditioner> {
  if (fs.existsSync(path.join(modelDir, TEXT_TO_IMAGE_FILES.textEncoder))) return ClipTextConditioner.load(modelDir);
  if (fs.existsSync(path.join(modelDir, CONDITIONING_FILES.dir, CONDITIONING_FILES.config))) return HashedTextConditioner.load(modelDir);
  throw new InputError('model folder has no text conditioner', {
    code: 'E_FILE_MISSING',
    file: modelDir,
    expected: `${TEXT_TO_IMAGE_FILES.textEncoder} + tokenizer/{vocab.json + merges.txt | tokenizer.json}, or ${CONDITIONING_FILES.dir}/${CONDITIONING_FILES.config}`,
    found: 'missing',
  });
}

/** The conditioner must produce the UNet's `cross_attention_dim`. */
export function checkConditioner(conditioner: TextConditioner, unetConfig: UNetConfig, file?: string): void {
  if (conditioner.dim !== unetConfig.crossAttentionDim) {
    throw new ShapeError("the text conditioner's width differs from the UNet's cross_attention_dim", { code: 'E_SHAPE', file, field: 'cross_attention_dim', expected: unetConfig.crossAttentionDim, found: conditioner.dim });
  }
}

/**
 * Loads a text-to-image model folder (STYLE.md §3 Packages): `unet/` (diffusers UNet; `unet/onnx/` runs on ORT),
 * `scheduler/scheduler_config.json`, the text conditioner (`text_encoder/model.onnx` + `tokenizer/`) and, for latent
 * models, `vae_decoder/model.onnx` (or `conditioning/config.json` in the synthetic world). Returns a pipeline with `generate` and `dispose()`.
 */
export async function loadTextToImage(modelDir: string, options: LoadTextToImageOptions = {}): Promise<TextToImagePipeline> {
  if (!fs.existsSync(modelDir) || !fs.statSync(modelDir).isDirectory()) {
    throw new InputError('model folder not found', { code: 'E_FILE_MISSING', file: modelDir, expected: 'a folder with unet/, scheduler/, text_encoder/ + tokenizer/ [, vae_decoder/]' });
  }
  const unetConfig = readModelUNetConfig(modelDir);
  const sched = readSchedulerConfigFile(path.join(modelDir, 'scheduler'));
  const decoder = await loadImageDecoder(modelDir, unetConfig);
  let conditioner: TextConditioner | undefined;
  let unet: UNetEngine | null = null;
  try {
    conditioner = options.conditioner ?? (await loadTextConditioner(modelDir));
    checkConditioner(conditioner, unetConfig, path.join(modelDir, TEXT_TO_IMAGE_FILES.unet, UNET_FILES.config));
    if (options.unet ?? true) unet = await loadUNetEngine(path.join(modelDir, TEXT_TO_IMAGE_FILES.unet), { engine: options.engine, onProgress: options.onProgress });
  } catch (err) {
    await decoder.dispose();
    if (!options.conditioner) await conditioner?.dispose();
    throw err instanceof AptpError ? err : new AptpError('cannot load the model folder', { file: modelDir, cause: err });
  }
  return new TextToImagePipeline({ conditioner, decoder, scheduler: { raw: sched.raw, file: sched.file }, sampleChannels: unetConfig.inChannels }, unet, {
    conditioner: !options.conditioner,
    decoder: true,
  });
}
