import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, DDPMScheduler, InputError, loadNoiseSchedule, Rng, ShapeError, type HostTensor } from '@aptp/core';
import { prunableTarget } from '@aptp/unet-gating';
import type { Batch } from '@aptp/datasets';
import {
  gumbelSigmoid,
  gumbelOptions,
  loadSentenceTransformer,
  PromptRouter,
  sampleGumbelNoise,
  saveRouter,
  SD21_DEPTH_ORDER,
  SyntheticPromptEncoder,
  type PromptEncoder,
  type RouterPhase,
} from '@aptp/router';
import {
  aptpLayout,
  checkConditioner,
  currentMacsOf,
  loadTextConditioner,
  loadUNet,
  macsModel,
  OrtVaeEncoder,
  PixelEncoder,
  readModelUNetConfig,
  VAE_ENCODER_FILES,
  type ArchitectureLayout,
  type HostArray,
  type ImageEncoder,
  type MacsModel,
  type TextConditioner,
  type UNet2DConditionModel,
  type UNetConfig,
} from '@aptp/unet-gating';
import type { LoadedCheckpoint } from '../checkpoint';
import { optimizerSettings, type PromptEncoderConfig, type PruneConfig } from '../config/reference';
import { runTraining, type StepMetrics, type TrainingProgress, type TrainingSummary } from '../loop/runTraining';
import { openTrainingData, type TrainingData } from '../loop/trainingData';
import { assignVariables, type TrainingTarget } from '../loop/trainingTarget';
import { createAdamW, scaledLearningRate } from '../optim/config';
import type { RunDir } from '../runDir';
import { macsMatchedArchitecture } from './macsMatch';
import { pruneStep, routerParams, type PruneBatch, type PruneStepModel } from '../steps/pruneStep';

/**
 * The pruning stage (APTP stage 1, APTP.md §1.2 item 1, §1.3, §2.6, §12 item 5): trains the architecture predictor and
 * the K architecture codes against the frozen teacher, then writes the router (`<run>/router/`, @aptp/router format)
 * and the experts' summary (`<run>/experts.json`: hard architecture, MACs, kept fractions per code).
 *
 * Randomness is keyed, not streamed (STYLE.md §3): sample b of step i draws its timestep, ε and Gumbel noise from
 * `Rng.forKey(seed, 'prune', i, <sample id>)`, the codes' noise from `Rng.forKey(seed, 'prune', i, 'codebook')`, so
 * a resumed run needs only the data iterator's position to continue exactly.
 *
 * Baselines (APTP.md §1.7): `singleArch` (one learnable vector for every prompt, no routing, contrastive weight 0,
 * K = 1; the gates come from the predictor's own sample in every step), `random` (K = 1 random architecture that keeps
 * a random half of every width gate and every depth gate; no training), `noOt` (training assignment by cosine argmax).
 */

export const PRUNE_FILES = { router: 'router', experts: 'experts.json' } as const;

/** The teacher model folder: UNet, training noise schedule, text conditioner, image encoder. */
export interface Teacher {
  dir: string;
  config: UNetConfig;
  unet: UNet2DConditionModel<tf.Tensor>;
  scheduler: DDPMScheduler;
  conditioner: TextConditioner;
  /**
   * Data images → x0 (APTP.md §5): the VAE encoder of a latent teacher (x0 = scaling_factor·z, z a keyed posterior
   * sample), the identity for a pixel-space teacher.
   */
  imageEncoder: ImageEncoder;
  dispose(): Promise<void>;
}

/**
 * Loads a teacher folder: `unet/` (config.json + weights), `scheduler/scheduler_config.json`, the text conditioner
 * (`text_encoder/model.onnx` + `tokenizer/`, or `conditioning/config.json`) and the image encoder. A folder with
 * `vae_encoder/model.onnx` (+ `config.json`, the Optimum ONNX layout; see `OrtVaeEncoder`) is a latent teacher: its
 * `latent_channels` must equal the UNet's in/out channels. Without it the UNet must be pixel-space (in/out channels 3);
 * a latent UNet without an encoder is a ConfigError naming the missing `vae_encoder/model.onnx`.
 */
export async function loadTeacher(dir: string, field = 'model.pretrainedModelNameOrPath'): Promise<Teacher> {
  if (!fs.existsSync(dir)) throw new InputError('teacher model folder not found', { code: 'E_FILE_MISSING', file: dir, field, expected: 'unet/, scheduler/, conditioning/ (run `aptp-trainer teacher`)' });
  const config = readModelUNetConfig(dir);
  const encoderDir = path.join(dir, VAE_ENCODER_FILES.dir);
  const encoderFile = path.join(encoderDir, VAE_ENCODER_FILES.model);
  const latent = fs.existsSync(encoderFile);
  if (!latent && (config.inChannels !== 3 || config.outChannels !== 3)) {
    throw new ConfigError(`a latent teacher (UNet in_channels ${config.inChannels}) needs a VAE encoder to turn the data images into latents`, {
      code: 'E_FILE_MISSING',
      file: encoderFile,
      field: 'in_channels',
      expected: `${VAE_ENCODER_FILES.dir}/${VAE_ENCODER_FILES.model} (+ ${VAE_ENCODER_FILES.config}) in the teacher folder, or a pixel-space UNet (in/out_channels 3)`,
      found: 'missing',
    });
  }
  const scheduler = loadNoiseSchedule(path.join(dir, 'scheduler'));
  const conditioner = await loadTextConditioner(dir);
  let imageEncoder: ImageEncoder | null = null;
  try {
    checkConditioner(conditioner, config, dir);
    if (latent) {
      const vae = await OrtVaeEncoder.load(encoderDir, { posterior: 'sample' });
      imageEncoder = vae;
      if (vae.latentChannels !== config.inChannels || config.outChannels !== config.inChannels) {
        throw new ShapeError('the VAE latents do not fit the teacher UNet (latent_channels = in_channels = out_channels needed)', {
          code: 'E_SHAPE',
          file: path.join(encoderDir, VAE_ENCODER_FILES.config),
          field: 'latent_channels',
          expected: `UNet in_channels ${config.inChannels}, out_channels ${config.outChannels}`,
          found: vae.latentChannels,
        });
      }
    } else {
      imageEncoder = new PixelEncoder();
    }
    const unet = await loadUNet(path.join(dir, 'unet'));
    const enc = imageEncoder;
    return {
      dir,
      config,
      unet,
      scheduler,
      conditioner,
      imageEncoder: enc,
      async dispose() {
        unet.dispose();
        await conditioner.dispose();
        await enc.dispose();
      },
    };
  } catch (err) {
    await conditioner.dispose();
    await imageEncoder?.dispose();
    throw err;
  }
}

/**
 * The batch's clean samples x0 `[B, C, h, w]` (host): its images `[B, 3, H, W]` through the teacher's image encoder
 * (identity for a pixel-space teacher, bit for bit); item b's posterior noise comes from `rngOf(ids[b])`.
 */
export function teacherX0(teacher: Pick<Teacher, 'imageEncoder'>, batch: Batch, rngOf: (id: string) => Rng, signal?: AbortSignal): Promise<HostArray> {
  return teacher.imageEncoder.encode({ data: batch.pixels, dims: batch.shape }, { rngs: batch.ids.map(rngOf), signal });
}

/** The UNet's sample size for training images of `imageSize` pixels (÷ the image encoder's scale factor). */
export function latentSize(imageSize: number, encoder: ImageEncoder, field: string): number {
  const f = encoder.scaleFactor;
  if (!Number.isInteger(imageSize / f)) {
    throw new ConfigError(`the training image size must be a multiple of the VAE scale factor ${f}`, { field, expected: `a multiple of ${f}`, found: imageSize });
  }
  return imageSize / f;
}

/** x0 as a tensor (the caller owns it). */
function x0Tensor(x0: HostArray): tf.Tensor4D {
  return tf.tensor4d(x0.data, x0.dims as [number, number, number, number], 'float32');
}

/** The prompt encoder of a config (the router's input). */
export async function createPromptEncoder(cfg: PromptEncoderConfig): Promise<PromptEncoder> {
  if (cfg.type === 'synthetic') return new SyntheticPromptEncoder({ dim: cfg.dim, seed: cfg.seed });
  return loadSentenceTransformer(cfg.path);
}

/**
 * The depth-gate priority order for a layout with D depth gates, generalising the reference's SD 2.1 order
 * `[-1, -2, 0, 1, -3, -4, 2, 3, -5, -6, 4, 5, -7, 6]`: alternately the next two from the back (outermost up-block gates
 * first) and the next two from the front (outermost down-block gates first). For D = 14 it is exactly the reference's.
 */
export function defaultDepthOrder(depthEntries: number): number[] {
  const out: number[] = [];
  let lo = 0;
  let hi = depthEntries - 1;
  let back = true;
  while (lo <= hi) {
    for (let j = 0; j < 2 && lo <= hi; j++) out.push(back ? hi-- : lo++);
    back = !back;
  }
  return out;
}

/** The router config a baseline implies. */
export function baselineRouterConfig(cfg: PruneConfig): PruneConfig['model']['router'] {
  const r = cfg.model.router;
  switch (cfg.baseline) {
    case 'singleArch':
      return { ...r, singleArchParam: true, optimalTransport: false, numCodes: 1 };
    case 'random':
      return { ...r, numCodes: 1 };
    case 'noOt':
      return { ...r, optimalTransport: false };
    default:
      return { ...r };
  }
}

/** A hard architecture that keeps a random half (at least one) of every width gate and every depth gate. */
export function randomArchitecture(layout: ArchitectureLayout, rng: Rng): Float32Array {
  const v = new Float32Array(layout.vectorLength);
  for (const g of layout.widthGates) {
    const keep = Math.max(1, Math.floor(g.width / 2));
    for (const i of rng.permutation(g.width).slice(0, keep)) v[g.offset + i] = 1;
  }
  for (let j = 0; j < layout.depthEntries; j++) v[layout.vectorLength - layout.depthEntries + j] = 1;
  return v;
}

/** Per-code summary of the experts (what `experts.json` holds). */
export interface ExpertSummary {
  code: number;
  /** Current total MACs of the hard code at the training resolution (one UNet call, batch 1). */
  macs: number;
  /** macs / teacher total MACs. */
  macsRatio: number;
  /** Current prunable MACs / D (the resource ratio). */
  resourceRatio: number;
  /** Kept share of width entries, and kept depth gates. */
  keptWidth: number;
  keptDepth: number;
  /** The hard architecture vector (0/1). */
  archVector: number[];
}

export function expertSummaries(router: PromptRouter, macs: MacsModel): ExpertSummary[] {
  const gs = router.codebook.embeddingGs.dataSync();
  const L = router.layout.vectorLength;
  const D = router.layout.depthEntries;
  const out: ExpertSummary[] = [];
  for (let k = 0; k < router.numCodes; k++) {
    const row: number[] = Array.from(gs.subarray(k * L, (k + 1) * L), (x): number => (x >= 0.5 ? 1 : 0));
    const cur = currentMacsOf(macs, row);
    const width = row.slice(0, L - D);
    out.push({
      code: k,
      macs: cur.totalMacs,
      macsRatio: cur.totalMacs / macs.totalMacs,
      resourceRatio: cur.prunableMacs / macs.fullPrunableMacs,
      keptWidth: width.reduce((a, b) => a + b, 0) / Math.max(1, width.length),
      keptDepth: row.slice(L - D).reduce((a, b) => a + b, 0),
      archVector: row,
    });
  }
  return out;
}

export interface PruneStageOptions {
  config: PruneConfig;
  run: RunDir;
  checkpoint?: LoadedCheckpoint | null;
  signal?: AbortSignal;
  onProgress?: (p: TrainingProgress) => void;
  /** Called with notes for the user (teacher, MACs target, baseline). */
  onNote?: (line: string) => void;
}

export interface PruneStageResult {
  summary: TrainingSummary | null;
  routerDir: string | null;
  experts: ExpertSummary[];
  pPrime: number;
}

/** Gumbel noise `[rows, L]` from per-row generators. */
function gumbelTensor(rngs: Rng[], L: number): tf.Tensor2D {
  return tf.tensor2d(sampleGumbelNoise(rngs, rngs.length, L), [rngs.length, L]);
}

/** Draws the batch's randomness and builds the step inputs (the caller disposes them). */
async function makeBatch(
  batch: Batch,
  step: number,
  seed: number,
  teacher: Teacher,
  encoder: PromptEncoder,
  router: PromptRouter,
  signal?: AbortSignal,
): Promise<PruneBatch> {
  const B = batch.ids.length;
  // x0 first (async; its posterior noise has its own key), then the step's randomness as for a pixel teacher.
  const x0 = await teacherX0(teacher, batch, (id) => Rng.forKey(seed, 'prune', step, id, 'vae'), signal);
  const [, C, H, W] = x0.dims as [number, number, number, number];
  const L = router.layout.vectorLength;
  const T = teacher.scheduler.config.numTrainTimesteps;
  const rngs = batch.ids.map((id) => Rng.forKey(seed, 'prune', step, id));
  const timesteps = new Int32Array(B);
  const noise = new Float32Array(B * C * H * W);
  rngs.forEach((r, b) => {
    timesteps[b] = Math.min(T - 1, Math.floor(r.nextDouble() * T));
    noise.set(r.normal(C * H * W), b * C * H * W);
  });
  const encoderHiddenStates = await teacher.conditioner.encode(batch.captions);
  const promptEmbeddings = await encoder.encode(batch.captions);
  // No await from here on: the tensors below cannot be stranded by a failing encoder.
  const assignment = gumbelTensor(rngs, L);
  const stepNoise = gumbelTensor(rngs, L);
  const codebook = gumbelTensor(Array.from({ length: router.numCodes }, (_, k) => Rng.forKey(seed, 'prune', step, 'codebook', k)), L);
  return {
    x0: x0Tensor(x0),
    noise: tf.tensor4d(noise, [B, C, H, W]),
    timesteps,
    encoderHiddenStates,
    promptEmbeddings,
    gumbel: { codebook, assignment, step: stepNoise },
  };
}

function disposeBatch(b: PruneBatch): void {
  tf.dispose([b.x0, b.noise, b.encoderHiddenStates, b.promptEmbeddings, b.gumbel.codebook, b.gumbel.assignment, b.gumbel.step]);
}

const EMBEDDING_GS = 'quantizer.embedding_gs';

/** Checkpointed state: router variables + `embedding_gs` + optimizer + data position. */
function pruneTarget(router: PromptRouter, params: Record<string, tf.Variable>, optimizer: TrainingTarget['optimizer'], data: TrainingData): TrainingTarget {
  return {
    weights: () => ({ ...params, [EMBEDDING_GS]: router.codebook.embeddingGs }),
    loadWeights(weights: ReadonlyMap<string, HostTensor>, file: string) {
      const gs = weights.get(EMBEDDING_GS);
      if (!gs) throw new InputError('tensor missing from checkpoint', { code: 'E_TENSOR_MISSING', file, field: EMBEDDING_GS });
      const rest = new Map([...weights].filter(([k]) => k !== EMBEDDING_GS));
      assignVariables(params, rest, file);
      const t = tf.tensor2d(Float32Array.from(gs.data as Float32Array), gs.shape as [number, number]);
      try {
        router.codebook.setEmbeddingGs(t);
      } finally {
        t.dispose();
      }
    },
    optimizer,
    hostState: data.hostState,
    restoreHostState: data.restoreHostState,
  };
}

/** Runs (or resumes) the pruning stage in `run`. */
export async function runPrune(options: PruneStageOptions): Promise<PruneStageResult> {
  const { config, run } = options;
  const note = options.onNote ?? (() => undefined);
  if (config.singleArchMacsRatio !== null && config.baseline !== 'singleArch') {
    throw new ConfigError('singleArchMacsRatio applies to the single-architecture baseline only', { field: 'singleArchMacsRatio', expected: 'null, or baseline singleArch', found: `${config.singleArchMacsRatio} with baseline ${config.baseline}` });
  }
  const teacher = await loadTeacher(config.model.pretrainedModelNameOrPath);
  let encoder: PromptEncoder | null = null;
  let router: PromptRouter | null = null;
  try {
    encoder = await createPromptEncoder(config.model.promptEncoder);
    const layout = aptpLayout(teacher.config);
    const routerCfg = baselineRouterConfig(config);
    if (routerCfg.depthOrder.length !== layout.depthEntries && JSON.stringify(routerCfg.depthOrder) === JSON.stringify(SD21_DEPTH_ORDER)) {
      routerCfg.depthOrder = defaultDepthOrder(layout.depthEntries);
      note(`depth order for ${layout.depthEntries} depth gates (the SD 2.1 default lists 14): [${routerCfg.depthOrder.join(', ')}]`);
    }
    if (routerCfg.inputDim !== encoder.dim) {
      throw new ConfigError('the router input width differs from the prompt encoder width', { field: 'model.router.inputDim', expected: encoder.dim, found: routerCfg.inputDim });
    }
    router = PromptRouter.init(layout, routerCfg, config.seed);
    const losses = config.baseline === 'singleArch' ? { ...config.training.losses, contrastiveLoss: { ...config.training.losses.contrastiveLoss, weight: 0 } } : config.training.losses;
    const data = await openTrainingData(config.data.dataset, config.data.loader, { batchSize: config.training.trainBatchSize, signal: options.signal });
    // MACs at the training resolution with the conditioner's text length (APTP.md §4.1: one training example), on the
    // UNet's sample: latents of size/f for a latent teacher (SD 2.1 at 256 px: 32×32), the image in pixel space.
    const ds = config.data.dataset;
    const size = ds.format === 'synthetic' ? ds.imageSize : config.data.loader.resolution;
    const sampleSize = latentSize(size, teacher.imageEncoder, ds.format === 'synthetic' ? 'data.dataset.imageSize' : 'data.loader.resolution');
    const macs = macsModel(teacher.config, { latentHeight: sampleSize, latentWidth: sampleSize, textTokens: teacher.conditioner.sequenceLength });
    const pPrime = prunableTarget(losses.resourceLoss.pruningTarget, macs);
    const space = teacher.imageEncoder.kind === 'vae' ? `latent (VAE encoder: ${size} px → ${sampleSize}×${sampleSize}×${teacher.imageEncoder.latentChannels})` : 'pixel space';
    note(`teacher ${teacher.dir}, ${space}: ${layout.vectorLength} gate entries, ${(macs.totalMacs / 1e6).toFixed(1)} M MACs per call; target p = ${losses.resourceLoss.pruningTarget} → p' = ${pPrime.toFixed(5)}`);

    if (config.baseline === 'random') {
      const arch = randomArchitecture(layout, Rng.forKey(config.seed, 'prune', 'random-architecture'));
      const t = tf.tensor2d(arch, [1, layout.vectorLength]);
      router.codebook.setEmbeddingGs(t);
      t.dispose();
      const routerDir = run.file(PRUNE_FILES.router);
      saveRouter(router, routerDir);
      const experts = expertSummaries(router, macs);
      run.writeJson(PRUNE_FILES.experts, { baseline: config.baseline, pPrime, teacherTotalMacs: macs.totalMacs, experts });
      note(`random baseline: one architecture, no training (MACs ratio ${experts[0]!.macsRatio.toFixed(3)})`);
      return { summary: null, routerDir, experts, pPrime };
    }

    const { hypernet, quantizer } = routerParams(router);
    const scale = (lr: number): number => scaledLearningRate(lr, config.training.optim.scaleLr, { batchSize: config.training.trainBatchSize });
    const optimizer = createAdamW(
      [
        { name: 'hypernet', lr: scale(config.training.optim.hypernetLearningRate), params: hypernet },
        { name: 'quantizer', lr: scale(config.training.optim.quantizerLearningRate), params: quantizer },
      ],
      optimizerSettings(config.training.optim),
      { totalSteps: config.training.maxTrainSteps },
    );
    const model: PruneStepModel = { unet: teacher.unet, router, scheduler: teacher.scheduler, macs, pPrime, losses };
    const params = { ...hypernet, ...quantizer };
    const target = pruneTarget(router, params, optimizer, data);
    const r = router;
    const enc = encoder;
    try {
      const summary = await runTraining({
        label: config.baseline === 'none' ? 'prune' : `prune (${config.baseline})`,
        steps: config.training.maxTrainSteps,
        saveEvery: config.training.logging.checkpointingSteps,
        keepLast: config.training.logging.checkpointsTotalLimit,
        target,
        run,
        resume: options.checkpoint ?? null,
        config,
        signal: options.signal,
        onProgress: options.onProgress,
        progressKeys: ['resourceRatioMean', 'contrastive'],
        step: async (i): Promise<StepMetrics> => {
          const batch = await makeBatch(await data.next(i), i, config.seed, teacher, enc, r, options.signal);
          const phase: RouterPhase = config.baseline === 'singleArch' || i < config.training.hypernetPretrainingSteps ? 'pretrain' : 'main';
          try {
            const m = await pruneStep(model, batch, phase, optimizer);
            const mean = m.ratios.reduce((a, b) => a + b, 0) / m.ratios.length;
            const std = m.ratios.length > 1 ? Math.sqrt(m.ratios.reduce((a, b) => a + (b - mean) ** 2, 0) / (m.ratios.length - 1)) : 0;
            return {
              loss: m.loss,
              ...m.terms,
              resourceRatioMean: mean,
              resourceRatioStd: std,
              resourceRatioMax: Math.max(...m.ratios),
              mainPhase: phase === 'main' ? 1 : 0,
              codeUsage: m.codeUsage,
            };
          } finally {
            disposeBatch(batch);
          }
        },
      });
      let routerDir: string | null = null;
      let experts: ExpertSummary[] = [];
      if (summary.status === 'completed') {
        let macsMatch: { target: number; offset: number; macsRatio: number } | undefined;
        if (config.baseline === 'singleArch') {
          // The one expert is the single architecture's noise-free sample, or the one at the requested MACs ratio.
          const logits = r.predictor.arch as tf.Tensor as tf.Tensor2D;
          const target = config.singleArchMacsRatio;
          if (target === null) {
            tf.tidy(() => r.codebook.setEmbeddingGs(gumbelSigmoid(logits, tf.zeros([1, layout.vectorLength]) as tf.Tensor2D, layout, gumbelOptions(r.config))));
          } else {
            const m = macsMatchedArchitecture(logits, layout, gumbelOptions(r.config), macs, target);
            r.codebook.setEmbeddingGs(m.gates);
            m.gates.dispose();
            macsMatch = { target, offset: m.offset, macsRatio: m.macsRatio };
            note(`single architecture at MACs ratio ${m.macsRatio.toFixed(4)} (target ${target}; logit offset ${m.offset.toFixed(4)})`);
          }
        }
        routerDir = run.file(PRUNE_FILES.router);
        saveRouter(r, routerDir);
        experts = expertSummaries(r, macs);
        run.writeJson(PRUNE_FILES.experts, { baseline: config.baseline, pPrime, teacherTotalMacs: macs.totalMacs, ...(macsMatch ? { macsMatch } : {}), experts });
      }
      return { summary, routerDir, experts, pPrime };
    } finally {
      optimizer.dispose();
      await data.close();
    }
  } finally {
    router?.dispose();
    await encoder?.dispose();
    await teacher.dispose();
  }
}

/** Reads `<prune run>/experts.json`. */
export function readExperts(pruneRunDir: string): { baseline: string; pPrime: number; teacherTotalMacs: number; experts: ExpertSummary[] } {
  const file = path.join(pruneRunDir, PRUNE_FILES.experts);
  if (!fs.existsSync(file)) throw new InputError('not a finished prune run (no experts.json)', { code: 'E_FILE_MISSING', file, expected: `${PRUNE_FILES.router}/, ${PRUNE_FILES.experts}` });
  return JSON.parse(fs.readFileSync(file, 'utf8')) as ReturnType<typeof readExperts>;
}

