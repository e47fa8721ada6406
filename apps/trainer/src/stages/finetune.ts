import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, InputError, readSafetensors, Rng } from '@aptp/core';
import { openSource, type IndexedSource, type Source } from '@aptp/datasets';
import { aptpLayout, expertConfig, prunedArchitecture, pruneWeights, UNET_FILES, writePrunedUNet } from '@aptp/unet-gating';
import type { LoadedCheckpoint } from '../checkpoint';
import { optimizerSettings, type FinetuneConfig } from '../config/reference';
import { runTraining, type StepMetrics, type TrainingProgress, type TrainingSummary } from '../loop/runTraining';
import { trainingDataFrom } from '../loop/trainingData';
import { variableTarget } from '../loop/trainingTarget';
import { createAdamW, scaledLearningRate } from '../optim/config';
import type { RunDir } from '../runDir';
import { finetuneStep, type FinetuneBatch, type FinetuneStepModel } from '../steps/finetuneStep';
import { createTrainableUNet, type TrainableUNet } from '../steps/trainableUNet';
import { loadTeacher, readExperts, teacherX0 } from './prune';
import type { RoutingMapping } from './route';

/**
 * Expert fine-tuning (APTP.md §1.2 item 3, §1.5, §6): expert k's architecture = hard(embedding_gs[k]) of the prune
 * run; its weights are **sliced from the teacher's** (load, then slice: §6.2, the intended semantics), and it is
 * fine-tuned on the training rows routed to it (`route` mapping) with w_ddpm·L_ddpm + w_block·L_block +
 * w_distill·L_distill against the full frozen teacher. The result is an expert folder (`<run>/unet/`, the pruned-folder
 * format of @aptp/unet-gating, loadable with `loadExpert`).
 *
 * Randomness: sample b of step i draws its timestep and ε from `Rng.forKey(seed, 'finetune', k, i, <sample id>)`, and
 * (latent teachers) its VAE posterior sample from `Rng.forKey(seed, 'finetune', k, i, <sample id>, 'vae')`.
 */

export const FINETUNE_FILES = { unet: 'unet' } as const;

/** Rows `indices` of an indexed source, as a source. */
export function subsetSource<A>(source: Source<A>, indices: readonly number[], name: string): IndexedSource<A> {
  if (source.kind !== 'indexed') throw new InputError('fine-tuning on routed rows needs an indexed data set', { field: 'data.dataset', expected: 'cc3m | coco2014 | coco30k | imageFolder | synthetic', found: source.name });
  return { kind: 'indexed', name, length: indices.length, info: () => ({ ...source.info(), rows: indices.length }), get: (i: number) => source.get(indices[i]!) };
}

export interface FinetuneStageOptions {
  config: FinetuneConfig;
  /** The prune run folder (router/, experts.json). */
  pruneRun: string;
  routing: RoutingMapping;
  expert: number;
  run: RunDir;
  checkpoint?: LoadedCheckpoint | null;
  signal?: AbortSignal;
  onProgress?: (p: TrainingProgress) => void;
}

export interface FinetuneStageResult {
  summary: TrainingSummary;
  /** The expert folder, written when the run completed. */
  expertDir: string | null;
  parameters: number;
  rows: number;
}

export async function runFinetune(options: FinetuneStageOptions): Promise<FinetuneStageResult> {
  const { config, run, expert: k, routing } = options;
  const info = readExperts(options.pruneRun);
  const code = info.experts[k];
  if (!code) throw new ConfigError('no such expert', { field: 'expert', expected: `0..${info.experts.length - 1}`, found: k });
  const indices = routing.expert.flatMap((e, i) => (e === k ? [i] : []));
  if (indices.length === 0) throw new InputError('no training prompt is routed to this expert', { field: 'expert', found: k });
  const teacher = await loadTeacher(config.model.pretrainedModelNameOrPath);
  let student: TrainableUNet | null = null;
  try {
    // 1. slice the teacher's weights for the expert's hard architecture (APTP.md §6.2)
    const layout = aptpLayout(teacher.config);
    const plan = prunedArchitecture(layout, code.archVector);
    const unetDir = path.join(teacher.dir, 'unet');
    const full = readSafetensors(path.join(unetDir, UNET_FILES.weights));
    const sliced = pruneWeights(plan, full, path.join(unetDir, UNET_FILES.weights));
    student = createTrainableUNet(expertConfig(teacher.config), sliced, `expert${k}`, { pruned: true });
    const parameters = Object.values(student.params).reduce((a, v) => a + v.size, 0);
    // 2. its prompts
    const source = subsetSource(await openSource(routing.dataset), indices, `expert-${k}`);
    const B = config.training.trainBatchSize;
    const data = trainingDataFrom(source, config.data.loader, { batchSize: B, signal: options.signal });
    const optim = config.training.optim;
    const optimizer = createAdamW([{ name: 'unet', lr: scaledLearningRate(optim.unetLearningRate, optim.scaleLr, { batchSize: B }), params: student.params }], optimizerSettings(optim), { totalSteps: config.training.maxTrainSteps });
    const target = variableTarget(student.params, {
      optimizer,
      hostState: data.hostState,
      restoreHostState: data.restoreHostState,
    });
    const l = config.training.losses;
    const model: FinetuneStepModel = {
      student: student.unet,
      params: student.params,
      teacher: teacher.unet,
      scheduler: teacher.scheduler,
      weights: { diffusion: l.diffusionLoss.weight, distillation: l.distillationLoss.weight, block: l.blockLoss.weight, snrGamma: l.diffusionLoss.snrGamma },
    };
    const T = teacher.scheduler.config.numTrainTimesteps;
    try {
      const summary = await runTraining({
        label: `expert ${k}`,
        steps: config.training.maxTrainSteps,
        saveEvery: config.training.logging.checkpointingSteps,
        keepLast: config.training.logging.checkpointsTotalLimit,
        target,
        run,
        resume: options.checkpoint ?? null,
        config: { ...config, expert: k, pruneRun: options.pruneRun },
        signal: options.signal,
        onProgress: options.onProgress,
        progressKeys: ['diffusion', 'distillation'],
        step: async (i): Promise<StepMetrics> => {
          const b = await data.next(i);
          // x0: the images through the teacher's image encoder (latents of a latent teacher; the pixels otherwise)
          const x0 = await teacherX0(teacher, b, (id) => Rng.forKey(config.seed, 'finetune', k, i, id, 'vae'), options.signal);
          const [n, C, H, W] = x0.dims as [number, number, number, number];
          const timesteps = new Int32Array(n);
          const noise = new Float32Array(n * C * H * W);
          b.ids.forEach((id, j) => {
            const r = Rng.forKey(config.seed, 'finetune', k, i, id);
            timesteps[j] = Math.min(T - 1, Math.floor(r.nextDouble() * T));
            noise.set(r.normal(C * H * W), j * C * H * W);
          });
          const encoderHiddenStates = await teacher.conditioner.encode(b.captions);
          const batch: FinetuneBatch = { x0: tf.tensor4d(x0.data, [n, C, H, W]), noise: tf.tensor4d(noise, [n, C, H, W]), timesteps, encoderHiddenStates };
          try {
            const m = await finetuneStep(model, batch, optimizer);
            return { ...m };
          } finally {
            tf.dispose([batch.x0, batch.noise, batch.encoderHiddenStates]);
          }
        },
      });
      let expertDir: string | null = null;
      if (summary.status === 'completed') {
        expertDir = run.file(FINETUNE_FILES.unet);
        const baseJson = JSON.parse(fs.readFileSync(path.join(unetDir, UNET_FILES.config), 'utf8')) as Record<string, unknown>;
        writePrunedUNet(expertDir, { baseJson, baseConfig: teacher.config, plan, weights: Object.fromEntries(student.diffusersWeights()) });
      }
      return { summary, expertDir, parameters, rows: indices.length };
    } finally {
      optimizer.dispose();
      await data.close();
    }
  } finally {
    student?.dispose();
    await teacher.dispose();
  }
}
