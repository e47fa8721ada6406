import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, DDPMScheduler, InputError, loadNoiseSchedule, Rng, type HostTensor } from '@aptp/core';
import { batchToTensor, createDataLoader, openSource, resolveTransform, type Batch, type DataLoader, type DataLoaderState } from '@aptp/datasets';
import { prunableTarget } from '@aptp/unet-gating';
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
  readModelUNetConfig,
  type ArchitectureLayout,
  type MacsModel,
  type TextConditioner,
  type UNet2DConditionModel,
  type UNetConfig,
} from '@aptp/unet-gating';
import type { LoadedCheckpoint } from '../checkpoint';
import { optimizerSettings, type PromptEncoderConfig, type PruneConfig } from '../config/reference';
import { runTraining, type StepMetrics, type TrainingProgress, type TrainingSummary } from '../loop/runTraining';
import { assignVariables, type TrainingTarget } from '../loop/trainingTarget';
import { createAdamW, scaledLearningRate } from '../optim/config';
import type { RunDir } from '../runDir';
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

/** The teacher model folder: UNet, training noise schedule, text conditioner. */
export interface Teacher {
  dir: string;
  config: UNetConfig;
  unet: UNet2DConditionModel<tf.Tensor>;
  scheduler: DDPMScheduler;
  conditioner: TextConditioner;
  dispose(): Promise<void>;
}

/** Loads a teacher folder (`unet/`, `scheduler/scheduler_config.json`, text conditioner). Pixel-space models only. */
export async function loadTeacher(dir: string, field = 'model.pretrainedModelNameOrPath'): Promise<Teacher> {
  if (!fs.existsSync(dir)) throw new InputError('teacher model folder not found', { code: 'E_FILE_MISSING', file: dir, field, expected: 'unet/, scheduler/, conditioning/ (run `aptp-trainer teacher`)' });
  const config = readModelUNetConfig(dir);
  if (config.inChannels !== 3 || config.outChannels !== 3) {
    throw new ConfigError('training needs a pixel-space teacher (latent models need a VAE encoder, which is not part of this pipeline)', {
      file: path.join(dir, 'unet/config.json'),
      field: 'in_channels',
      expected: 3,
      found: config.inChannels,
    });
  }
  const scheduler = loadNoiseSchedule(path.join(dir, 'scheduler'));
  const conditioner = await loadTextConditioner(dir);
  try {
    checkConditioner(conditioner, config, dir);
    const unet = await loadUNet(path.join(dir, 'unet'));
    return {
      dir,
      config,
      unet,
      scheduler,
      conditioner,
      async dispose() {
        unet.dispose();
        await conditioner.dispose();
      },
    };
  } catch (err) {
    await conditioner.dispose();
    throw err;
  }
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
): Promise<PruneBatch> {
  const B = batch.ids.length;
  const [, C, H, W] = batch.shape;
  const L = router.layout.vectorLength;
  const T = teacher.scheduler.config.numTrainTimesteps;
  const rngs = batch.ids.map((id) => Rng.forKey(seed, 'prune', step, id));
  const timesteps = new Int32Array(B);
  const noise = new Float32Array(B * C * H * W);
  rngs.forEach((r, b) => {
    timesteps[b] = Math.min(T - 1, Math.floor(r.nextDouble() * T));
    noise.set(r.normal(C * H * W), b * C * H * W);
  });
  const assignment = gumbelTensor(rngs, L);
  const stepNoise = gumbelTensor(rngs, L);
  const codebook = gumbelTensor(Array.from({ length: router.numCodes }, (_, k) => Rng.forKey(seed, 'prune', step, 'codebook', k)), L);
  const encoderHiddenStates = await teacher.conditioner.encode(batch.captions);
  const promptEmbeddings = await encoder.encode(batch.captions);
  return {
    x0: batchToTensor(batch),
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
function pruneTarget(router: PromptRouter, params: Record<string, tf.Variable>, optimizer: TrainingTarget['optimizer'], loader: DataLoader): TrainingTarget {
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
    hostState: () => ({ data: loader.state() }),
    restoreHostState: (s) => loader.restore(s.data as DataLoaderState),
  };
}

/** Runs (or resumes) the pruning stage in `run`. */
export async function runPrune(options: PruneStageOptions): Promise<PruneStageResult> {
  const { config, run } = options;
  const note = options.onNote ?? (() => undefined);
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
    const source = await openSource(config.data.dataset);
    const loaderCfg = config.data.loader;
    const loader = createDataLoader(source, {
      batchSize: config.training.trainBatchSize,
      seed: loaderCfg.seed,
      shuffle: loaderCfg.shuffle,
      transform: resolveTransform({ ...loaderCfg, batchSize: config.training.trainBatchSize } as Parameters<typeof resolveTransform>[0]),
      epochs: Infinity,
      dropLast: loaderCfg.dropLast,
      shuffleBuffer: loaderCfg.shuffleBuffer,
      signal: options.signal,
    });
    // MACs at the training resolution with the conditioner's text length (APTP.md §4.1: one training example).
    const ds = config.data.dataset;
    const size = ds.format === 'synthetic' ? ds.imageSize : config.data.loader.resolution;
    const macs = macsModel(teacher.config, { latentHeight: size, latentWidth: size, textTokens: teacher.conditioner.sequenceLength });
    const pPrime = prunableTarget(losses.resourceLoss.pruningTarget, macs);
    note(`teacher ${teacher.dir}: ${layout.vectorLength} gate entries, ${(macs.totalMacs / 1e6).toFixed(1)} M MACs per call; target p = ${losses.resourceLoss.pruningTarget} → p' = ${pPrime.toFixed(5)}`);

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
    const target = pruneTarget(router, params, optimizer, loader);
    const it: { current: AsyncIterator<Batch> | null } = { current: null };
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
          it.current ??= loader[Symbol.asyncIterator]();
          const next = await it.current.next();
          if (next.done) throw new InputError('the data loader ended before the last step', { field: 'data', found: `step ${i}` });
          const batch = await makeBatch(next.value, i, config.seed, teacher, enc, r);
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
        if (config.baseline === 'singleArch') {
          // The one expert is the single architecture's noise-free sample.
          tf.tidy(() => r.codebook.setEmbeddingGs(gumbelSigmoid(r.predictor.arch as tf.Tensor as tf.Tensor2D, tf.zeros([1, layout.vectorLength]) as tf.Tensor2D, layout, gumbelOptions(r.config))));
        }
        routerDir = run.file(PRUNE_FILES.router);
        saveRouter(r, routerDir);
        experts = expertSummaries(r, macs);
        run.writeJson(PRUNE_FILES.experts, { baseline: config.baseline, pPrime, teacherTotalMacs: macs.totalMacs, experts });
      }
      return { summary, routerDir, experts, pPrime };
    } finally {
      optimizer.dispose();
      await it.current?.return?.(undefined);
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

