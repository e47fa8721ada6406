import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import sharp from 'sharp';
import { z } from 'zod';
import { ConfigError, InputError, ShapeError, initBackend, readSafetensors, type ProgressCallback, type SamplerClassName } from '@aptp/core';
import {
  OrtUNetEngine,
  TfjsUNetEngine,
  aptpLayout,
  currentMacsOf,
  expertConfig,
  exportUNetToOnnx,
  loadTextToImage,
  loadUNetEngine,
  macsModel,
  onnxExportDir,
  openSharedExperts,
  readModelUNetConfig,
  readPrunedUNet,
  type ArchitectureLayout,
  type MacsModel,
  type SharedExperts,
  type TextToImagePipeline,
  type TextToImageRequest,
  type UNetConfig,
  type UNetEngine,
  type UNetEngineKind,
} from '@aptp/unet-gating';
import {
  HYPERNET_FILES,
  QUANTIZER_FILES,
  ROUTER_FILES,
  SENTENCE_TRANSFORMER_FILES,
  SyntheticPromptEncoder,
  loadAptpRouter,
  loadSentenceTransformer,
  type PromptEncoder,
  type PromptRouter,
} from '@aptp/router';
import type { EngineInfo, GeneratedImage, ImageEngine, ImageEngineFactory, ImageRequest } from './server/engine';

/**
 * The sampler's generation side (issue 8 §1–2; APTP.md §9): an APTP model folder is loaded once, prompts are routed
 * to experts, grouped by expert and sampled in batches — each batch holds prompts of one expert, which is what lets
 * APTP batch at inference.
 *
 * Model folder (the parts a command needs must be present; a missing one is an error listing the expected files):
 *
 *   unet/                      the full (teacher) UNet: config.json + diffusion_pytorch_model.safetensors
 *                              [+ onnx/{model.onnx, aptp_onnx.json}: run on ONNX Runtime]. Needed for `--full` and for
 *                              shared-weight experts; its config defines the gate layout.
 *   router/                    our router (config.json + router.safetensors), or the released layout
 *   hypernet/ + quantizer/     (config.json + diffusion_pytorch_model.safetensors each)
 *   prompt_encoder/            the router's frozen prompt encoder: a sentence-transformer folder (tokenizer.json,
 *                              config.json, onnx/model.onnx — all-mpnet-base-v2 for SD 2.1), or config.json
 *                              {"_class_name": "SyntheticPromptEncoder", "dim", "seed", "bigram_weight"}
 *   experts/                   optional. Either expert folders experts/<k>/ or experts/expert-<k>/[unet/]
 *                              (pruneUNetFolder output, k = 0 … K−1, each optionally with onnx/), or experts/arch_vectors.safetensors (`arch_vectors`
 *                              [K, L]) applied to unet/ as shared-weight experts. Absent: the experts are the router's
 *                              codes, hard(embedding_gs) (APTP.md §6.1), over unet/.
 *   scheduler/scheduler_config.json
 *   text_encoder/model.onnx + tokenizer/   (SD: CLIP in ONNX)   or   conditioning/config.json (synthetic world)
 *   vae_decoder/model.onnx [+ config.json] latent models only
 */
export const MODEL_FOLDER_PARTS = {
  unet: 'unet',
  experts: 'experts',
  archVectors: 'experts/arch_vectors.safetensors',
  promptEncoder: 'prompt_encoder',
} as const;

/** The full model's id in manifests and `engine()`. */
export const FULL = 'full' as const;
export type ExpertId = number | typeof FULL;

export interface ExpertEntry {
  id: number;
  name: string;
  /** `pruned`: an expert folder; `shared`: base weights + architecture vector. */
  source: 'pruned' | 'shared';
  /** Expert folder (pruned only). */
  dir?: string;
  /** The hard architecture vector (length L of `layout`). */
  archVector: Float32Array;
}

export type RouteNoise = 'reference' | 'none';

export interface LoadAptpModelOptions {
  /** UNet engine: `auto` (default: ONNX Runtime on the export, or an in-memory export; tfjs for huge UNets), `ort`, `tfjs`. */
  engine?: UNetEngineKind;
  /**
   * Prompt-side Gumbel noise of eval routing (APTP.md §2.5): `reference` (default) = the reference's fixed eval
   * noise of a batch of one prompt, for every prompt (so routing never depends on the batch); `none` = zero noise.
   */
  routeNoise?: RouteNoise;
  /** Experts kept loaded at once (default 1: the sampler runs one expert's batches after another). */
  maxLoadedExperts?: number;
  onProgress?: ProgressCallback;
}

const syntheticEncoderSchema = z.strictObject({
  _class_name: z.literal('SyntheticPromptEncoder'),
  dim: z.number().int().positive().optional(),
  seed: z.number().int().optional(),
  bigram_weight: z.number().min(0).optional(),
});

export class AptpModel {
  private readonly engines = new Map<string, UNetEngine>();
  private readonly macsCache = new Map<string, MacsModel>();
  private disposed = false;

  constructor(
    readonly dir: string,
    readonly pipeline: TextToImagePipeline,
    /** The config the architecture vectors refer to (the gated base UNet). */
    readonly baseConfig: UNetConfig,
    readonly layout: ArchitectureLayout,
    readonly experts: readonly ExpertEntry[],
    readonly router: PromptRouter | null,
    readonly promptEncoder: PromptEncoder | null,
    private readonly shared: SharedExperts | null,
    private readonly options: LoadAptpModelOptions,
  ) {}

  /** Default image size `[width, height]`: the UNet's `sample_size` × the decoder's scale factor (768 for SD 2.1). */
  get defaultSize(): [number, number] {
    const s = this.baseConfig.sampleSize;
    const [h, w] = s === null ? [64, 64] : typeof s === 'number' ? [s, s] : s;
    return [w * this.pipeline.scaleFactor, h * this.pipeline.scaleFactor];
  }

  /** Image sizes must be multiples of this (decoder factor × 2^(down blocks − 1)). */
  get sizeMultiple(): number {
    return this.pipeline.scaleFactor * 2 ** (this.baseConfig.downBlockTypes.length - 1);
  }

  /** Routes prompts to experts (eval-mode cosine argmax, APTP.md §2.5); each prompt is routed as if alone. */
  async route(prompts: readonly string[], signal?: AbortSignal): Promise<number[]> {
    this.live();
    if (!this.router || !this.promptEncoder) {
      throw new InputError('this model folder has no router (use --expert or --full)', { code: 'E_FILE_MISSING', file: this.dir, expected: `${ROUTER_FILES.map((f) => `router/${f}`).join(', ')} or ${[...HYPERNET_FILES, ...QUANTIZER_FILES].join(', ')}; and ${MODEL_FOLDER_PARTS.promptEncoder}/` });
    }
    if (prompts.length === 0) return [];
    const x = await this.promptEncoder.encode(prompts, { signal });
    const noise = this.options.routeNoise === 'none' ? null : tf.tidy(() => tf.tile(this.router!.evalNoise(1), [prompts.length, 1]) as tf.Tensor2D);
    try {
      const r = await this.router.route(x, { mode: 'cosine', noise: noise ?? 'none' });
      return Array.from(r.expert);
    } finally {
      x.dispose();
      noise?.dispose();
    }
  }

  /** MACs of one UNet call (batch 1) of an expert or the full model at an image size (APTP.md §4). */
  macs(expert: ExpertId, width = this.defaultSize[0], height = this.defaultSize[1]): number {
    const f = this.pipeline.scaleFactor;
    const key = `${width}x${height}`;
    let m = this.macsCache.get(key);
    if (!m) {
      m = macsModel(this.baseConfig, { latentHeight: height / f, latentWidth: width / f, textTokens: this.pipeline.parts.conditioner.sequenceLength }, this.layout);
      this.macsCache.set(key, m);
    }
    return expert === FULL ? m.totalMacs : currentMacsOf(m, this.expert(expert).archVector).totalMacs;
  }

  expert(id: number): ExpertEntry {
    const e = this.experts[id];
    if (!e) throw new InputError('no such expert', { code: 'E_EXPERT', field: 'expert', expected: this.experts.length ? `0 … ${this.experts.length - 1}` : 'none (this folder has no experts; use --full)', found: id });
    return e;
  }

  /** The UNet engine of an expert (or `full`), loaded on first use; the least recently used ones are released. */
  async engine(id: ExpertId): Promise<UNetEngine> {
    this.live();
    const key = String(id);
    const cached = this.engines.get(key);
    if (cached) {
      this.engines.delete(key);
      this.engines.set(key, cached);
      return cached;
    }
    const kind = this.options.engine ?? 'auto';
    let engine: UNetEngine;
    if (id === FULL) {
      engine = await loadUNetEngine(path.join(this.dir, MODEL_FOLDER_PARTS.unet), { engine: kind, onProgress: this.options.onProgress });
    } else {
      const e = this.expert(id);
      if (e.source === 'pruned') engine = await loadUNetEngine(e.dir!, { engine: kind, pruned: true, onProgress: this.options.onProgress });
      else if (kind !== 'tfjs') {
        // a shared-weight expert on ORT (`auto` and `ort`): exported in memory from the sliced base weights
        const exported = exportUNetToOnnx(expertConfig(this.shared!.baseConfig), this.shared!.source(id), { pruned: true });
        engine = await OrtUNetEngine.fromExport(exported);
      } else {
        // SharedExperts owns (and caches) the model; the engine wrapper does not
        return new TfjsUNetEngine(this.shared!.get(id));
      }
    }
    this.engines.set(key, engine);
    while (this.engines.size > Math.max(1, this.options.maxLoadedExperts ?? 1)) {
      const [oldKey, old] = this.engines.entries().next().value as [string, UNetEngine];
      this.engines.delete(oldKey);
      await old.dispose();
    }
    return engine;
  }

  /** Generates one batch on one expert (or `full`); image i ↔ request i (see `TextToImagePipeline.generate`). */
  async generate(id: ExpertId, requests: readonly TextToImageRequest[], options: { scheduler?: SamplerClassName; eta?: number; signal?: AbortSignal; onProgress?: ProgressCallback; label?: string } = {}) {
    const engine = await this.engine(id);
    return this.pipeline.generate(engine, requests, options);
  }

  /** Releases every model. Idempotent. */
  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    for (const e of this.engines.values()) await e.dispose();
    this.engines.clear();
    this.shared?.dispose();
    this.router?.dispose();
    await this.promptEncoder?.dispose();
    await this.pipeline.dispose();
  }

  private live(): void {
    if (this.disposed) throw new InputError('the APTP model has been disposed', { code: 'E_DISPOSED' });
  }
}

/** Expert folders `experts/<k>/` or `experts/expert-<k>/` (the folder itself or its `unet/` holds the UNet). */
function listExpertDirs(expertsDir: string): Map<number, string> {
  const out = new Map<number, string>();
  if (!fs.existsSync(expertsDir)) return out;
  for (const e of fs.readdirSync(expertsDir, { withFileTypes: true })) {
    const m = /^(?:expert-)?(\d+)$/.exec(e.name);
    if (!e.isDirectory() || !m) continue;
    const dir = [path.join(expertsDir, e.name), path.join(expertsDir, e.name, 'unet')].find((d) => fs.existsSync(path.join(d, 'config.json')));
    if (dir) out.set(Number(m[1]), dir);
  }
  return out;
}

/** The router's prompt encoder of a model folder (`prompt_encoder/`). */
export async function loadPromptEncoder(modelDir: string): Promise<PromptEncoder> {
  const dir = path.join(modelDir, MODEL_FOLDER_PARTS.promptEncoder);
  const configFile = path.join(dir, 'config.json');
  if (fs.existsSync(configFile)) {
    let json: Record<string, unknown>;
    try {
      json = JSON.parse(fs.readFileSync(configFile, 'utf8')) as Record<string, unknown>;
    } catch (err) {
      throw new InputError('not valid JSON', { code: 'E_JSON', file: configFile, cause: err });
    }
    if (json._class_name === 'SyntheticPromptEncoder') {
      const r = syntheticEncoderSchema.safeParse(json);
      if (!r.success) {
        const issue = r.error.issues[0]!;
        throw new ConfigError(issue.message, { code: 'E_CONFIG_FIELD', file: configFile, field: issue.path.join('.') || ((issue as { keys?: string[] }).keys ?? []).join(', ') });
      }
      return new SyntheticPromptEncoder({ dim: r.data.dim, seed: r.data.seed, bigramWeight: r.data.bigram_weight });
    }
  }
  if (SENTENCE_TRANSFORMER_FILES.every((f) => fs.existsSync(path.join(dir, f)))) return loadSentenceTransformer(dir);
  throw new InputError('model folder has no prompt encoder for the router', {
    code: 'E_FILE_MISSING',
    file: dir,
    expected: `${MODEL_FOLDER_PARTS.promptEncoder}/{${SENTENCE_TRANSFORMER_FILES.join(', ')}} or ${MODEL_FOLDER_PARTS.promptEncoder}/config.json {"_class_name": "SyntheticPromptEncoder", …}`,
    found: fs.existsSync(dir) ? fs.readdirSync(dir).join(', ') || 'an empty folder' : 'missing',
  });
}

const hasRouter = (dir: string): boolean =>
  fs.existsSync(path.join(dir, 'router', ROUTER_FILES[0])) || [...HYPERNET_FILES, ...QUANTIZER_FILES].some((f) => fs.existsSync(path.join(dir, f)));

/**
 * Loads an APTP model folder (see the file comment). The router and its prompt encoder are optional (without them
 * only `--expert`/`--full` work); experts come from expert folders, `experts/arch_vectors.safetensors` or the router's
 * codes. Models load lazily per expert (`engine`).
 */
export async function loadAptpModel(modelDir: string, options: LoadAptpModelOptions = {}): Promise<AptpModel> {
  if (!fs.existsSync(modelDir) || !fs.statSync(modelDir).isDirectory()) {
    throw new InputError('model folder not found', { code: 'E_MODEL_DIR', file: modelDir, expected: 'an APTP model folder (unet/, router/ or hypernet/ + quantizer/, prompt_encoder/, experts/, scheduler/, text encoder, [vae_decoder/])' });
  }
  const unetDir = path.join(modelDir, MODEL_FOLDER_PARTS.unet);
  // unet/config.json defines the sample, the conditioning width and the gate layout (weights: --full, shared experts)
  const baseConfig = readModelUNetConfig(modelDir);
  const layout = aptpLayout(baseConfig);
  const expertDirs = listExpertDirs(path.join(modelDir, MODEL_FOLDER_PARTS.experts));
  const pipeline = await loadTextToImage(modelDir, { unet: false, engine: options.engine });
  const toDispose: Array<{ dispose(): unknown }> = [pipeline];
  try {
    let router: PromptRouter | null = null;
    let encoder: PromptEncoder | null = null;
    if (hasRouter(modelDir)) {
      router = loadAptpRouter(modelDir, { layout });
      toDispose.push(router);
      encoder = await loadPromptEncoder(modelDir);
      toDispose.push(encoder);
      if (encoder.dim !== router.config.inputDim) {
        throw new ShapeError("the prompt encoder's width differs from the router's input", { code: 'E_SHAPE', file: path.join(modelDir, MODEL_FOLDER_PARTS.promptEncoder), field: 'dim', expected: router.config.inputDim, found: encoder.dim });
      }
    }

    let experts: ExpertEntry[];
    let shared: SharedExperts | null = null;
    const archFile = path.join(modelDir, MODEL_FOLDER_PARTS.archVectors);
    if (expertDirs.size > 0) {
      const K = router?.numCodes ?? Math.max(...expertDirs.keys()) + 1;
      const missing = Array.from({ length: K }, (_, k) => k).filter((k) => !expertDirs.has(k));
      if (missing.length > 0) {
        throw new InputError('expert folders are missing', { code: 'E_FILE_MISSING', file: path.join(modelDir, MODEL_FOLDER_PARTS.experts), expected: `experts/0 … experts/${K - 1} (one per architecture code)`, found: `missing ${missing.map((k) => `experts/${k}`).join(', ')}` });
      }
      experts = [...expertDirs.keys()].filter((k) => k < K).sort((a, b) => a - b).map((k) => {
        const folder = readPrunedUNet(expertDirs.get(k)!);
        if (folder.plan.layout.vectorLength !== layout.vectorLength) {
          throw new ShapeError("the expert's architecture vector does not fit the UNet's gate layout", { code: 'E_SHAPE', file: expertDirs.get(k)!, field: 'arch_vector', expected: layout.vectorLength, found: folder.plan.layout.vectorLength });
        }
        return { id: k, name: `expert-${k}`, source: 'pruned' as const, dir: expertDirs.get(k)!, archVector: folder.plan.archVector };
      });
    } else {
      let rows: Float32Array[] | null = null;
      if (fs.existsSync(archFile)) {
        const t = readSafetensors(archFile, ['arch_vectors']).get('arch_vectors');
        if (!t || t.shape.length !== 2 || t.shape[1] !== layout.vectorLength) {
          throw new ShapeError('arch_vectors must be [K, L]', { code: 'E_SHAPE', file: archFile, field: 'arch_vectors', expected: `[K, ${layout.vectorLength}]`, found: t?.shape ?? 'missing' });
        }
        if (router && t.shape[0] !== router.numCodes) throw new ShapeError('one architecture vector per router code', { code: 'E_SHAPE', file: archFile, field: 'arch_vectors', expected: `[${router.numCodes}, ${layout.vectorLength}]`, found: t.shape });
        const data = Float32Array.from(t.data as ArrayLike<number>);
        rows = Array.from({ length: t.shape[0]! }, (_, k) => data.subarray(k * layout.vectorLength, (k + 1) * layout.vectorLength));
      } else if (router) {
        const codes = router.expertGates(Array.from({ length: router.numCodes }, (_, k) => k));
        const data = codes.dataSync() as Float32Array;
        codes.dispose();
        rows = Array.from({ length: router.numCodes }, (_, k) => data.slice(k * layout.vectorLength, (k + 1) * layout.vectorLength));
      }
      experts = (rows ?? []).map((r, k) => ({ id: k, name: `expert-${k}`, source: 'shared' as const, archVector: hardRow(r) }));
      if (experts.length > 0) {
        shared = openSharedExperts(unetDir, experts.map((e) => e.archVector), { maxLoaded: options.maxLoadedExperts ?? 1 });
        toDispose.push(shared);
      }
    }
    return new AptpModel(modelDir, pipeline, baseConfig, layout, experts, router, encoder, shared, options);
  } catch (err) {
    for (const d of toDispose.reverse()) await d.dispose();
    throw err;
  }
}

function hardRow(row: ArrayLike<number>): Float32Array {
  return Float32Array.from(row, (v) => (v >= 0.5 ? 1 : 0));
}

// ---------------------------------------------------------------------------------------------------------------
// Batches: group by expert, then by what can share UNet calls

export interface SampleItem extends TextToImageRequest {
  /** Position in the input (file line order). */
  index: number;
  expert: ExpertId;
  /** false when forced by `--expert` / `--full`. */
  routed: boolean;
}

/**
 * Batches of at most `batchSize` items with one expert each (experts in ascending order, `full` last), and inside an
 * expert the same steps, size and guidance on/off (so a batch is one group of UNet calls); input order within.
 */
export function planBatches(items: readonly SampleItem[], batchSize: number): SampleItem[][] {
  if (!(Number.isInteger(batchSize) && batchSize >= 1)) throw new ConfigError('batch size must be a positive integer', { field: 'batchSize', found: batchSize });
  const groups = new Map<string, SampleItem[]>();
  for (const it of items) {
    const key = `${it.expert}|${it.steps}|${it.width}x${it.height}|${it.guidance > 1}`;
    const g = groups.get(key);
    if (g) g.push(it);
    else groups.set(key, [it]);
  }
  const order = (e: ExpertId) => (e === FULL ? Number.MAX_SAFE_INTEGER : e);
  const sorted = [...groups.values()].sort((a, b) => order(a[0]!.expert) - order(b[0]!.expert));
  const out: SampleItem[][] = [];
  for (const g of sorted) for (let i = 0; i < g.length; i += batchSize) out.push(g.slice(i, i + batchSize));
  return out;
}

/** 8-bit RGB `[H, W, 3]` → PNG file bytes (sharp; deterministic for the same pixels). */
export async function encodePng(rgb: Uint8Array, width: number, height: number): Promise<Uint8Array> {
  const buf = await sharp(Buffer.from(rgb.buffer, rgb.byteOffset, rgb.byteLength), { raw: { width, height, channels: 3 } }).png().toBuffer();
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

// ---------------------------------------------------------------------------------------------------------------
// The server's engine over a model folder

export interface AptpImageEngineOptions extends LoadAptpModelOptions {
  scheduler?: SamplerClassName;
  /** Request defaults (APTP.md §9: 25 steps, CFG 7.5; size: the model's default). */
  steps?: number;
  guidance?: number;
  maxSteps?: number;
  /** Largest width/height (default 2 × the default size). */
  maxSize?: number;
}

/** `ImageEngine` (apps/sampler/src/server/engine.ts) over a loaded APTP model. */
export class AptpImageEngine implements ImageEngine {
  readonly info: EngineInfo;

  constructor(
    readonly model: AptpModel,
    private readonly options: AptpImageEngineOptions = {},
  ) {
    const [width, height] = model.defaultSize;
    this.info = {
      experts: model.experts.map((e) => ({ id: e.id, macs: model.macs(e.id), name: e.name })),
      defaults: { steps: options.steps ?? 25, guidance: options.guidance ?? 7.5, width, height },
      limits: { maxSteps: options.maxSteps ?? 100, maxSize: options.maxSize ?? 2 * Math.max(width, height), sizeMultiple: model.sizeMultiple },
    };
  }

  route(prompts: readonly string[], signal?: AbortSignal): Promise<number[]> {
    return this.model.route(prompts, signal);
  }

  async generate(expertId: number, requests: readonly ImageRequest[], signal?: AbortSignal): Promise<GeneratedImage[]> {
    const scheduler = this.options.scheduler ?? 'PNDMScheduler';
    const images = await this.model.generate(expertId, requests, { scheduler, signal, label: `expert ${expertId}` });
    return Promise.all(
      images.map(async (im) => ({
        png: await encodePng(im.rgb, im.width, im.height),
        info: { scheduler, unetCalls: im.unetCalls, macs: this.model.macs(expertId, im.width, im.height) },
      })),
    );
  }

  dispose(): Promise<void> {
    return this.model.dispose();
  }
}

/** The `ImageEngineFactory` `serve` runs: initialises the tensor backend and loads the model folder. */
export const loadAptpImageEngine: ImageEngineFactory = async ({ modelDir, backend }) => {
  await initBackend({ backend });
  return new AptpImageEngine(await loadAptpModel(modelDir));
};

/** Whether the folder holds an ONNX export of its full UNet (reported by `sample`). */
export function hasOnnxExport(modelDir: string): boolean {
  return onnxExportDir(path.join(modelDir, MODEL_FOLDER_PARTS.unet)) !== null;
}
