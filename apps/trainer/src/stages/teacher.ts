import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { z } from 'zod';
import {
  ConfigError,
  DDPMScheduler,
  ShapeError,
  readSafetensors,
  resolveSchedulerConfig,
  schedulerConfigToJson,
  writeJsonAtomic,
  writeSafetensors,
  type HostTensor,
} from '@aptp/core';
import {
  configErrorFromZod,
  dataLoaderConfigSchema,
  datasetConfigSchema,
  resolveTransform,
  SyntheticWorld,
  syntheticConfigSchema,
  type ResolvedDatasetConfig,
  type SkipReport,
  type SyntheticConfig,
} from '@aptp/datasets';
import { CONDITIONING_FILES, HashedTextConditioner, UNET_FILES, parseUNetConfig, readUNetConfig, type UNetConfig } from '@aptp/unet-gating';
import { createAdamW } from '../optim/config';
import { LR_SCHEDULERS } from '../optim/lrSchedule';
import { readMetrics, type RunDir } from '../runDir';
import { sha256File, type LoadedCheckpoint } from '../checkpoint';
import { runTraining, type TrainingProgress, type TrainingSummary } from '../loop/runTraining';
import { variableTarget } from '../loop/trainingTarget';
import { createTrainableUNet, initUNetWeights } from '../steps/trainableUNet';
import { openTrainingData, type TrainingData, type TrainingLoaderConfig } from '../loop/trainingData';
import { dataRowKey, teacherBatch, teacherBatchOf, teacherStepOn, type TeacherBatch } from '../steps/teacherStep';
import { dataParallelLayout, dataParallelTeacherStepOn, replicaInit, type DataParallel } from '../parallel/dataParallelStep';
import { GradientWorkerPool } from '../parallel/pool';
import { captionReliance, loadTeacherParts } from './teacherCheck';

/**
 * The teacher stage (issue 7 item 1): trains a text-conditioned UNet from scratch with the denoising loss on any data
 * set (default: the synthetic world) and writes it as a diffusers-style model folder:
 *
 *   unet/config.json, unet/diffusion_pytorch_model.safetensors   (the EMA weights, stored as float16: < 5 MB)
 *   scheduler/scheduler_config.json                               (sampling: DDIM, same noise schedule)
 *   conditioning/config.json                                      (the weight-free HashedTextConditioner)
 *   model_index.json, metrics.jsonl (the training's), provenance.json
 *
 * Default model: a pixel-space 3-channel UNet in the SD 2.x family at 16×16 with 3 levels (16, 8, 4 px; 32/64/64
 * channels), `DownBlock2D, DownBlock2D, CrossAttnDownBlock2D` + `UNetMidBlock2DCrossAttn` + `CrossAttnUpBlock2D,
 * UpBlock2D, UpBlock2D`, 2 ResNets per down block (3 per up block) so APTP's half-gated depth gates apply, linear
 * projections, GEGLU feed-forward, `gated_ff` with 16 feed-forward groups, and diffusers' `addition_embed_type:
 * "text"`: the prompt is pooled by attention (`TextTimeEmbedding`) and added to the time embedding, so every ResNet
 * sees it. Why this shape (measured, see apps/trainer/README.md `## Teacher`): with cross-attention alone a 1000-step
 * teacher ignored its prompt (caption-reliance gap 0.4 % at t = 900); the pooled text made the gap 21–33 % within
 * 300–500 steps. At 32 px, 3000 steps of v-prediction (session 2) and at 16 px 3000 steps of v-prediction (session 3)
 * gave speckled colour noise, not shapes; x₀-prediction (`sample`) gives clean images with the same budget, so it is
 * the default. Cosine noise schedule (squaredcos_cap_v2, suited to small pixel images), min-SNR-γ = 5 (in x₀ space:
 * min(SNR, γ)), 10% empty captions for classifier-free guidance, EMA of the weights (exported).
 *
 * Data: `dataset` without a `format` key is the built-in synthetic world (rows k·B … of its train split, rendered at
 * `imageSize`); with a `format` it is any @aptp/datasets config (imageFolder, cc3m, webdataset, coco2014, coco30k,
 * synthetic), read through the resumable data loader of loop/trainingData.ts with the `loader` settings (default: the
 * `train` transform at 32 px; the loader position and skip counts are checkpointed; broken images are skipped and
 * counted in metrics.jsonl `skippedImages` and provenance.json `data.skipped`).
 */
export const DEFAULT_TEACHER_UNET = {
  _class_name: 'UNet2DConditionModel',
  sample_size: 16,
  in_channels: 3,
  out_channels: 3,
  block_out_channels: [32, 64, 64],
  down_block_types: ['DownBlock2D', 'DownBlock2D', 'CrossAttnDownBlock2D'],
  mid_block_type: 'UNetMidBlock2DCrossAttn',
  up_block_types: ['CrossAttnUpBlock2D', 'UpBlock2D', 'UpBlock2D'],
  layers_per_block: 2,
  attention_head_dim: [1, 2, 2],
  cross_attention_dim: 64,
  norm_num_groups: 8,
  use_linear_projection: true,
  flip_sin_to_cos: true,
  freq_shift: 0,
  gated_ff: true,
  ff_gate_width: 16,
  addition_embed_type: 'text',
  addition_embed_type_num_heads: 4,
} as const;

const schedulerSchema = z.strictObject({
  numTrainTimesteps: z.number().int().min(2).default(1000).describe('num_train_timesteps T'),
  betaSchedule: z.enum(['linear', 'scaled_linear', 'squaredcos_cap_v2']).default('squaredcos_cap_v2').describe('beta_schedule (cosine suits pixel space)'),
  betaStart: z.number().gt(0).lt(1).default(0.0001).describe('beta_start (linear schedules)'),
  betaEnd: z.number().gt(0).lt(1).default(0.02).describe('beta_end (linear schedules)'),
  predictionType: z
    .enum(['epsilon', 'v_prediction', 'sample'])
    .default('sample')
    .describe('prediction_type: sample = x₀ (the default: on CPU budgets it gives clean images far sooner than v / ε, README)'),
});

const conditioningSchema = z.strictObject({
  seed: z.number().int().min(0).default(0).describe('seed of the hashed word vectors'),
  sequenceLength: z.number().int().min(2).default(24).describe('S: tokens per prompt'),
  positionScale: z.number().min(0).default(0.5).describe('weight of the position encoding'),
});

/** The built-in synthetic world: a `dataset` without a `format` key. */
const syntheticWorldSchema = z.strictObject({
  seed: z.number().int().min(0).default(0).describe('synthetic world seed'),
  imageSize: z.number().int().min(8).default(16).describe('image side in pixels'),
  validationFraction: z.number().gt(0).lt(1).default(0.1).describe('share of prompts held out (never trained on)'),
  backgroundWeights: syntheticConfigSchema.shape.backgroundWeights,
  // training mix only (absent = the world's defaults, as the demo and the checks see it)
  categoryWeights: syntheticConfigSchema.shape.categoryWeights.unwrap().optional().describe('relative frequency of each prompt category in training'),
  sizeWeights: syntheticConfigSchema.shape.sizeWeights.unwrap().optional().describe('relative frequency of each shape size in training'),
  firstRow: z.number().int().min(0).optional().describe('first train row (absent = 0): step k reads rows firstRow + k·B …, so a later training phase reads rows an earlier one did not'),
});
type SyntheticWorldConfig = z.output<typeof syntheticWorldSchema> & { format?: undefined };

/** How a data set with a `format` is read: @aptp/datasets' loader config; the batch size is `batchSize`, epochs ∞. */
export const teacherLoaderSchema = dataLoaderConfigSchema.omit({ batchSize: true, epochs: true }).extend({
  resolution: z.number().int().positive().default(16).describe('image side of the preset transforms (the default teacher: 16 px)'),
});

/** A config-file-only field checked by a zod `safeParse`; its error names the nested field (`root: …`; the CLI adds the key). */
function nested<O>(parse: (raw: unknown) => { success: true; data: O } | { success: false; error: z.ZodError }) {
  return z.unknown().transform((raw, ctx): O => {
    const r = parse(raw);
    if (r.success) return r.data;
    ctx.addIssue({ code: 'custom', message: configErrorFromZod(r.error).message, input: raw });
    return z.NEVER;
  });
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** `dataset`: the synthetic world (no `format`) or any @aptp/datasets config (`format` set). */
const teacherDatasetSchema = nested<SyntheticWorldConfig | ResolvedDatasetConfig>((raw) =>
  isRecord(raw) && 'format' in raw ? datasetConfigSchema.safeParse(raw) : syntheticWorldSchema.safeParse(raw),
);

/** Whether `dataset` is the built-in synthetic world (the default). */
export function isSyntheticWorldConfig(d: SyntheticWorldConfig | ResolvedDatasetConfig): d is SyntheticWorldConfig {
  return !('format' in d);
}

const num = () => z.coerce.number();

/** Options of `aptp-trainer teacher` (defaults < --config < flags). */
export const teacherSchema = z.strictObject({
  out: z.string().optional().describe('run folder (default runs/teacher-<time>); with --resume, the run to continue'),
  resume: z.boolean().default(false).describe('continue the run in --out from its latest checkpoint'),
  export: z.string().optional().describe('folder to write the trained teacher into (default <run folder>/teacher)'),
  init: z
    .string()
    .optional()
    .describe('teacher model folder to start from (its exported weights; optimizer, EMA and lr schedule start afresh); its unet and conditioning configs must equal this run\'s'),
  seed: num().pipe(z.number().int().min(0)).default(0).describe('seed of the weight init, noise, timesteps and caption dropout'),
  steps: num().pipe(z.number().int().min(1)).default(2700).describe('optimizer steps (each on new samples)'),
  batchSize: num().pipe(z.number().int().min(1)).default(32).describe('samples per step (split across the worker threads)'),
  learningRate: num().pipe(z.number().positive()).default(2e-3).describe('AdamW learning rate'),
  lrScheduler: z.enum(LR_SCHEDULERS).default('cosine').describe('learning-rate schedule (cosine: 2e-3 → 0 over the run)'),
  lrWarmupSteps: num().pipe(z.number().int().min(0)).default(50).describe('linear warm-up steps'),
  lrStepRules: z.string().optional().describe('piecewise_constant schedule: "multiplier:steps,…,lastMultiplier" (diffusers step_rules)'),
  adamWeightDecay: num().pipe(z.number().min(0)).default(0).describe('AdamW decoupled weight decay'),
  maxGradNorm: num().pipe(z.number().positive()).default(1).describe('clip the total gradient norm'),
  emaDecay: num().pipe(z.number().min(0).lt(1)).default(0.995).describe('EMA of the weights (exported); 0 = off'),
  captionDropout: num().pipe(z.number().min(0).max(1)).default(0.1).describe('share of empty captions (classifier-free guidance)'),
  snrGamma: num().pipe(z.number().positive()).nullable().default(5).describe('min-SNR-γ weighting (APTP.md §5.1); null = plain MSE'),
  x0Weighting: z.enum(['epsilon', 'v_prediction']).default('epsilon').describe('x₀ models: weight the x₀ error like the min-SNR loss of an ε model (min(SNR, γ)) or of a v model (min(SNR + 1, γ))'),
  saveEvery: num().pipe(z.number().int().min(0)).default(100).describe('checkpoint every N steps'),
  checkSamples: num().pipe(z.number().int().min(0)).default(32).describe('validation images of the caption-reliance check written to provenance.json (0 = skip)'),
  backend: z.string().optional().describe('tensor backend: wasm | cpu | tfjs-node (env APTP_BACKEND)'),
  workers: num()
    .pipe(z.number().int().min(1).max(64))
    .default(2)
    .describe('threads computing each step (the batch is split across them; wasm uses one core per thread; results are reproducible for a fixed value)'),
  unet: z.record(z.string(), z.unknown()).default({ ...DEFAULT_TEACHER_UNET }).describe('diffusers UNet config.json (snake_case; config file only)'),
  scheduler: schedulerSchema.default(schedulerSchema.parse({})).describe('training noise schedule (config file only)'),
  conditioning: conditioningSchema.default(conditioningSchema.parse({})).describe('HashedTextConditioner (config file only)'),
  dataset: teacherDatasetSchema
    .default(syntheticWorldSchema.parse({}))
    .describe('synthetic world { seed, imageSize, validationFraction }, or any @aptp/datasets config with a `format` (config file only)'),
  loader: nested((raw) => teacherLoaderSchema.safeParse(raw))
    .optional()
    .describe('data loader of a dataset with a `format`: seed, shuffle, transform, resolution, dropLast, shuffleBuffer (config file only)'),
});
export type TeacherArgs = z.output<typeof teacherSchema>;

/** The parts of the options that define the trained model and its data (saved in config.json and checkpoints). */
export function teacherRunConfig(args: TeacherArgs): Record<string, unknown> {
  const { out: _o, resume: _r, export: _e, backend: _b, workers: _w, checkSamples: _c, loader: _l, ...rest } = args;
  return isSyntheticWorldConfig(args.dataset) ? rest : { ...rest, loader: teacherLoader(args) };
}

/** The loader settings of a data set with a `format` (defaults filled in). */
export function teacherLoader(args: TeacherArgs): TrainingLoaderConfig {
  return args.loader ?? teacherLoaderSchema.parse({});
}

/**
 * The image side the data gives and the field that sets it: the world's `imageSize`, or the transform's resolution
 * when it crops or resizes exactly; `null` when only the images know (checked on every batch).
 */
export function teacherImageSize(args: TeacherArgs): { size: number; field: string } | null {
  const d = args.dataset;
  if (isSyntheticWorldConfig(d)) return { size: d.imageSize, field: 'dataset.imageSize' };
  const loader = teacherLoader(args);
  const t = resolveTransform({ ...loader, batchSize: args.batchSize, epochs: Infinity });
  if (t.crop !== 'none' || t.resize === 'exact') return { size: t.resolution, field: typeof loader.transform === 'string' ? 'loader.resolution' : 'loader.transform.resolution' };
  if (d.format === 'synthetic' && t.resize === 'none') return { size: d.imageSize, field: 'dataset.imageSize' };
  return null;
}

export interface TeacherModel {
  unetConfig: UNetConfig;
  conditioner: HashedTextConditioner;
  scheduler: DDPMScheduler;
}

/** Validates the model parts of the options (errors name the field) and builds config, conditioner and schedule. */
export function teacherModel(args: TeacherArgs): TeacherModel {
  // errors read `--config unet: <field>: …` (parseUNetConfig names the diffusers field)
  const unetConfig: UNetConfig = parseUNetConfig(args.unet, 'unet');
  if (unetConfig.inChannels !== 3 || unetConfig.outChannels !== 3) {
    throw new ConfigError('the teacher is pixel-space RGB', { field: 'unet.in_channels/out_channels', expected: 3, found: `${unetConfig.inChannels}/${unetConfig.outChannels}` });
  }
  if (isSyntheticWorldConfig(args.dataset) && args.loader !== undefined) {
    throw new ConfigError('loader applies to a dataset with a `format` (the built-in synthetic world is read row by row)', { field: 'loader', expected: 'no loader, or dataset.format' });
  }
  const levels = 2 ** (unetConfig.blockOutChannels.length - 1);
  const image = teacherImageSize(args);
  if (image && image.size % levels !== 0) {
    throw new ConfigError('image size must be divisible by 2^(down blocks − 1)', { field: image.field, expected: `a multiple of ${levels}`, found: image.size });
  }
  const conditioner = new HashedTextConditioner({ ...args.conditioning, dim: unetConfig.crossAttentionDim });
  const scheduler = new DDPMScheduler({ ...args.scheduler, clipSample: false });
  return { unetConfig, conditioner, scheduler };
}

/** The sampling scheduler written next to the teacher: DDIM on the training schedule, trailing spacing, x̂0 clipped. */
export function samplingSchedulerJson(args: TeacherArgs): Record<string, unknown> {
  const cfg = resolveSchedulerConfig('DDIMScheduler', { ...args.scheduler, timestepSpacing: 'trailing', stepsOffset: 0, clipSample: true, setAlphaToOne: false });
  return schedulerConfigToJson('DDIMScheduler', cfg);
}

export interface TeacherRunOptions {
  args: TeacherArgs;
  run: RunDir;
  resume: LoadedCheckpoint | null;
  signal?: AbortSignal;
  onProgress?: (p: TrainingProgress) => void;
  /** The command line, for provenance. */
  command?: string;
  backendName?: string;
  /** The built gradient worker (default: dist/gradientWorker.js next to the bundle; tests point to the build). */
  workerScript?: string;
}

export interface TeacherRunResult {
  summary: TrainingSummary;
  /** The model folder written. */
  exportDir: string;
  /** Rows the data loader skipped (missing/broken images, empty captions); `null` for the synthetic world. */
  skips: SkipReport | null;
  /** Why the caption-reliance check did not run, if it did not (`checkSamples` > 0, not the synthetic world). */
  checkSkipped: string | null;
}

/**
 * The synthetic world a teacher is checked on: its training world (built in, or a `format: synthetic` config) without
 * the training mix (category and size weights), so the checks read the prompts the demo evaluates whatever the mix;
 * `null` for other data sets.
 */
export function checkWorldConfig(dataset: SyntheticWorldConfig | ResolvedDatasetConfig): Partial<SyntheticConfig> | null {
  if (!isSyntheticWorldConfig(dataset) && dataset.format !== 'synthetic') return null;
  // the split and row count of a `format: synthetic` config do not change its prompts
  const { categoryWeights: _c, sizeWeights: _s, ...world } = dataset;
  return withoutFirstRow(world);
}

/** A world config without the teacher's `firstRow` (which rows a run reads, not what the world is). */
function withoutFirstRow<T extends object>(world: T): Omit<T, 'firstRow'> {
  const { firstRow: _f, ...rest } = world as T & { firstRow?: number };
  return rest;
}

/**
 * Checks the teacher folder `init` (if set) against this run's model: its UNet and conditioner configs must equal the
 * run's (errors name `init`, the file and the differing field). Returns its weights file, or `null` without `init`.
 */
export function checkTeacherInit(args: TeacherArgs, model: TeacherModel): string | null {
  if (args.init === undefined) return null;
  const dir = args.init;
  const configFile = path.join(dir, TEACHER_FILES.unetDir, UNET_FILES.config);
  if (!fs.existsSync(configFile)) {
    throw new ConfigError('not a teacher model folder', { field: 'init', file: configFile, expected: 'a folder written by `aptp-trainer teacher` (unet/, conditioning/)', found: 'missing' });
  }
  const sameFields = <T extends object>(ours: T, theirs: T, file: string, what: string) => {
    for (const key of Object.keys(ours) as (keyof T & string)[]) {
      const [a, b] = [JSON.stringify(theirs[key]), JSON.stringify(ours[key])];
      if (a !== b) throw new ConfigError(`the init teacher has another ${what}`, { field: 'init', file, expected: `${key} ${b} (this run's)`, found: a });
    }
  };
  sameFields(model.unetConfig, readUNetConfig(configFile), configFile, 'UNet');
  sameFields(model.conditioner.config, HashedTextConditioner.load(dir).config, path.join(dir, CONDITIONING_FILES.dir, CONDITIONING_FILES.config), 'text conditioner');
  return path.join(dir, TEACHER_FILES.unetDir, UNET_FILES.weights);
}

/**
 * The weights a run starts from: the torch-style init of `seed`, or the exported weights of the teacher folder `init`
 * (`checkTeacherInit`; building the UNet checks each tensor). `init` is `null` for a fresh init.
 */
export function teacherStartWeights(args: TeacherArgs, model: TeacherModel): { weights: Map<string, HostTensor>; source?: string; init: { dir: string; sha256: string } | null } {
  const weightsFile = checkTeacherInit(args, model);
  if (weightsFile === null) return { weights: initUNetWeights(model.unetConfig, args.seed, { zeroOut: true }), init: null };
  return { weights: readSafetensors(weightsFile), source: weightsFile, init: { dir: args.init!, sha256: sha256File(weightsFile) } };
}

/** The world of the caption-reliance check (`checkWorldConfig`). */
export function checkWorld(dataset: SyntheticWorldConfig | ResolvedDatasetConfig): SyntheticWorld | null {
  const config = checkWorldConfig(dataset);
  return config ? new SyntheticWorld(config) : null;
}

/** Trains (or continues) the teacher in `run` and writes the model folder. */
export async function runTeacher(options: TeacherRunOptions): Promise<TeacherRunResult> {
  const { args, run } = options;
  const model = teacherModel(args);
  const dataset = args.dataset;
  const world = isSyntheticWorldConfig(dataset) ? new SyntheticWorld(withoutFirstRow(dataset)) : null; // trained on row by row, with its training mix
  const firstRow = isSyntheticWorldConfig(dataset) ? (dataset.firstRow ?? 0) : 0;
  const data: TrainingData | null = world ? null : await openTrainingData(dataset, teacherLoader(args), { batchSize: args.batchSize });
  const start = teacherStartWeights(args, model);
  const trainable = createTrainableUNet(model.unetConfig, start.weights, 'teacher', { source: start.source });
  const params = trainable.params;
  const ema: Record<string, tf.Variable> | null =
    args.emaDecay > 0 ? Object.fromEntries(Object.entries(params).map(([k, v]) => [k, tf.variable(v.clone(), false, `${v.name}/ema`)])) : null;
  const optimizer = createAdamW([{ name: 'unet', lr: args.learningRate, params }], {
    lrScheduler: args.lrScheduler,
    lrWarmupSteps: args.lrWarmupSteps,
    lrStepRules: args.lrStepRules,
    adamWeightDecay: args.adamWeightDecay,
    maxGradNorm: args.maxGradNorm,
    scaleLr: false,
  }, { totalSteps: args.steps });
  const saved: Record<string, tf.Variable> = { ...params };
  if (ema) for (const [k, v] of Object.entries(ema)) saved[`ema/${k}`] = v;
  const target = variableTarget(saved, data ? { optimizer, hostState: data.hostState, restoreHostState: data.restoreHostState } : { optimizer });
  const batchOptions = { seed: args.seed, batchSize: args.batchSize, captionDropout: args.captionDropout, numTrainTimesteps: args.scheduler.numTrainTimesteps };
  const stepCtx = { unet: trainable.unet, params, ema, emaDecay: args.emaDecay, optimizer, scheduler: model.scheduler, conditioner: model.conditioner, snrGamma: args.snrGamma, x0WeightedAs: args.x0Weighting };
  const levels = 2 ** (model.unetConfig.blockOutChannels.length - 1);
  let dp: DataParallel | null = null; // started in the try below (closed in its finally)
  /** Steps 3–5 on a built batch, on this thread or split across the worker threads; the batch is disposed. */
  const stepOn = async (batch: TeacherBatch, k: number) => {
    try {
      return dp ? await dataParallelTeacherStepOn(stepCtx, dp, batch, k) : teacherStepOn(stepCtx, batch, k);
    } finally {
      tf.dispose([batch.x0, batch.noise]);
    }
  };
  /** One step on the next loader batch: rows keyed `<epoch>:<id>`, skipped rows counted. */
  const dataStep = async (d: TrainingData, k: number) => {
    const b = await d.next(k);
    const [, , H, W] = b.shape;
    if (H % levels !== 0 || W % levels !== 0) {
      throw new ShapeError('image size must be divisible by 2^(down blocks − 1); set a transform that crops', { field: 'loader.transform', expected: `sides a multiple of ${levels}`, found: `${H}×${W}` });
    }
    const m = await stepOn(teacherBatchOf({ pixels: b.pixels, shape: b.shape, captions: b.captions, rows: b.ids.map((id) => dataRowKey(b.epoch, id)) }, batchOptions), k);
    return { ...m, numTensors: tf.memory().numTensors, epoch: b.epoch, skippedImages: d.skips().total };
  };
  const worldStep = async (w: SyntheticWorld, k: number) => ({ ...(await stepOn(teacherBatch(w, batchOptions, k, firstRow), k)), numTensors: tf.memory().numTensors });
  try {
    if (args.workers > 1) {
      const init = replicaInit(stepCtx, args.unet, options.backendName ?? tf.getBackend());
      dp = dataParallelLayout(await GradientWorkerPool.start({ threads: args.workers - 1, init, script: options.workerScript }), params);
    }
    const summary = await runTraining({
      label: 'teacher',
      steps: args.steps,
      saveEvery: args.saveEvery,
      step: world ? (k) => worldStep(world, k) : (k) => dataStep(data!, k),
      target,
      run,
      resume: options.resume,
      config: teacherRunConfig(args),
      signal: options.signal,
      onProgress: options.onProgress,
      progressKeys: [],
    });
    const exportDir = args.export ?? path.join(run.dir, 'teacher');
    const skips = data ? data.skips() : null;
    const reliance = checkWorld(dataset);
    const checkSkipped = args.checkSamples > 0 && !reliance ? `caption-reliance check not run: it uses the synthetic world's validation prompts (dataset format ${(dataset as ResolvedDatasetConfig).format})` : null;
    writeTeacherFolder(exportDir, {
      args,
      model,
      weights: trainable.diffusersWeights(ema ?? params),
      metricsFile: run.metricsFile,
      note: world ? undefined : `pixel-space teacher (${(dataset as ResolvedDatasetConfig).format} data set): no VAE; the UNet output is the image in [-1, 1]`,
      provenance: {
        ...(data ? { what: `teacher UNet of the ${(dataset as ResolvedDatasetConfig).format} data set (aptp-trainer teacher)` } : {}),
        command: options.command ?? null,
        backend: options.backendName ?? tf.getBackend(),
        workers: args.workers,
        ...(start.init ? { init: start.init } : {}),
        status: summary.status,
        stepsDone: summary.endStep,
        stepsPlanned: args.steps,
        runDir: run.dir,
        ...(skips ? { data: { format: (dataset as ResolvedDatasetConfig).format, samplesSeen: data!.hostState().data.samples, skipped: skips } } : {}),
        ...(checkSkipped ? { captionReliance: { skipped: checkSkipped } } : {}),
      },
    });
    if (args.checkSamples > 0 && reliance) await addCaptionReliance(exportDir, reliance, args.checkSamples);
    return { summary, exportDir, skips, checkSkipped };
  } finally {
    await (dp as DataParallel | null)?.pool.close();
    await data?.close();
    optimizer.dispose();
    if (ema) tf.dispose(Object.values(ema));
    trainable.dispose();
  }
}

/** Measures the exported teacher's caption reliance (stages/teacherCheck.ts) and adds it to provenance.json. */
async function addCaptionReliance(dir: string, world: SyntheticWorld, samples: number): Promise<void> {
  const parts = await loadTeacherParts(dir);
  try {
    const rows = captionReliance(parts, world, { samples });
    const file = path.join(dir, TEACHER_FILES.provenance);
    const prov = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
    writeJsonAtomic(file, { ...prov, captionReliance: { samples, split: 'validation', meanSquaredError: rows } });
  } finally {
    parts.unet.dispose();
  }
}

export const TEACHER_FILES = {
  unetDir: 'unet',
  scheduler: 'scheduler/scheduler_config.json',
  modelIndex: 'model_index.json',
  metrics: 'metrics.jsonl',
  provenance: 'provenance.json',
} as const;

export interface WriteTeacherOptions {
  args: TeacherArgs;
  model: TeacherModel;
  weights: Map<string, HostTensor>;
  /** The run's metrics.jsonl (copied). */
  metricsFile?: string;
  /** model_index.json `_note` (default: the synthetic world's pixel-space teacher). */
  note?: string;
  provenance: Record<string, unknown>;
}

/** Total training wall time over all invocations of a run (elapsedSec restarts at each resume). */
export function trainingSeconds(records: Record<string, unknown>[]): number {
  let total = 0;
  let prev = 0;
  for (const r of records) {
    const e = typeof r.elapsedSec === 'number' ? r.elapsedSec : prev;
    if (e < prev) total += prev;
    prev = e;
  }
  return total + prev;
}

/** Writes the diffusers-style teacher folder (see the stage comment). */
export function writeTeacherFolder(dir: string, o: WriteTeacherOptions): void {
  const unetDir = path.join(dir, TEACHER_FILES.unetDir);
  fs.mkdirSync(unetDir, { recursive: true });
  fs.mkdirSync(path.join(dir, 'scheduler'), { recursive: true });
  const unetJson = { _class_name: 'UNet2DConditionModel', _diffusers_version: '0.31.0', ...o.args.unet };
  writeJsonAtomic(path.join(unetDir, UNET_FILES.config), unetJson);
  writeSafetensors(path.join(unetDir, UNET_FILES.weights), Object.fromEntries(o.weights), { dtype: 'F16', metadata: { format: 'pt' } });
  writeJsonAtomic(path.join(dir, TEACHER_FILES.scheduler), samplingSchedulerJson(o.args));
  o.model.conditioner.save(dir);
  writeJsonAtomic(path.join(dir, TEACHER_FILES.modelIndex), {
    _class_name: 'AptpPixelTextToImage',
    _note: o.note ?? 'pixel-space teacher of the synthetic world: no VAE; the UNet output is the image in [-1, 1]',
    unet: ['diffusers', 'UNet2DConditionModel'],
    scheduler: ['diffusers', 'DDIMScheduler'],
    conditioning: ['aptp', 'HashedTextConditioner'],
  });
  let records: Record<string, unknown>[] = [];
  if (o.metricsFile && fs.existsSync(o.metricsFile)) {
    fs.copyFileSync(o.metricsFile, path.join(dir, TEACHER_FILES.metrics));
    records = readMetrics(o.metricsFile);
  }
  const last = records.slice(-50).map((r) => r.loss).filter((v): v is number => typeof v === 'number');
  writeJsonAtomic(path.join(dir, TEACHER_FILES.provenance), {
    what: 'teacher UNet of the synthetic world (aptp-trainer teacher)',
    date: new Date().toISOString(),
    ...o.provenance,
    seed: o.args.seed,
    trainingSeconds: Number(trainingSeconds(records).toFixed(1)),
    lossLast50Mean: last.length ? Number((last.reduce((a, b) => a + b, 0) / last.length).toFixed(5)) : null,
    exportedWeights: o.args.emaDecay > 0 ? `EMA (decay ${o.args.emaDecay})` : 'raw',
    node: process.versions.node,
    config: teacherRunConfig(o.args),
  });
}
