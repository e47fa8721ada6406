import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { z } from 'zod';
import { Command, NumericError, ProgressBar, initBackend, writeJsonAtomic, type ProgressCallback } from '@aptp/core';
import { SyntheticWorld, type SyntheticSample } from '@aptp/datasets';
import {
  HEAD_NAMES,
  SyntheticAttributeClassifier,
  classifierLoss,
  encodeTargets,
  imagesToTensor,
  validateClassifier,
  type ClassifierValidation,
  type Ratio,
} from '@aptp/eval';
import { AdamW, namedGrads } from '../optim/adamW';
import { lrSchedule } from '../optim/lrSchedule';

/** Where the committed evaluator lives, relative to the repository root. */
export const EVALUATOR_ASSET_DIR = 'apps/trainer/assets/evaluator';
export const PROVENANCE_FILE = 'provenance.json';

export const evaluatorSchema = z.strictObject({
  out: z.string().default(EVALUATOR_ASSET_DIR).describe('folder to write config.json, model.safetensors and provenance.json into'),
  seed: z.coerce.number().int().min(0).default(0).describe('seed of the weight init, the synthetic world and the shuffled-prompt check'),
  steps: z.coerce.number().int().min(1).default(20000).describe('optimizer steps'),
  batchSize: z.coerce.number().int().min(1).default(32).describe('training samples per step'),
  learningRate: z.coerce.number().positive().default(2e-3).describe('AdamW peak learning rate (cosine decay after a linear warm-up)'),
  warmupSteps: z.coerce.number().int().min(0).default(100).describe('linear learning-rate warm-up steps'),
  valSamples: z.coerce.number().int().min(2).default(1000).describe('held-out validation samples (prompts never seen in training)'),
  imageSize: z.coerce.number().int().min(8).default(16).describe('image side of the synthetic world and of the classifier input'),
  backend: z.string().optional().describe('tensor backend: wasm (default here) | cpu | tfjs-node (env APTP_BACKEND)'),
});
export type EvaluatorArgs = z.output<typeof evaluatorSchema>;

export interface EvaluatorResult {
  classifier: SyntheticAttributeClassifier;
  validation: ClassifierValidation;
  stepsDone: number;
  finalLoss: number;
}

/**
 * Trains the synthetic-world classifier: step k uses train-split samples k·B … k·B+B−1 of `SyntheticWorld({ seed })`
 * (a fresh, deterministic stream: no sample repeats), AdamW without decay, cosine schedule. Then validates on the
 * first `valSamples` samples of the prompt-disjoint validation split. Stops early (keeping what it has) on `signal`.
 */
export async function trainEvaluator(args: EvaluatorArgs, onProgress?: ProgressCallback, signal?: AbortSignal): Promise<EvaluatorResult> {
  const world = new SyntheticWorld({ seed: args.seed, imageSize: args.imageSize });
  const classifier = SyntheticAttributeClassifier.init({ imageSize: args.imageSize }, { seed: args.seed, trainable: true });
  const params = classifier.trainableWeights();
  const optimizer = new AdamW([{ name: 'classifier', lr: args.learningRate, params }], {
    weightDecay: 0,
    schedule: lrSchedule('cosine', { warmupSteps: Math.min(args.warmupSteps, args.steps - 1), totalSteps: args.steps }),
  });
  let ema = Number.NaN;
  let stepsDone = 0;
  try {
    for (let k = 0; k < args.steps && !signal?.aborted; k++) {
      const batch: SyntheticSample[] = [];
      for (let j = 0; j < args.batchSize; j++) batch.push(world.sample('train', k * args.batchSize + j));
      const targets = encodeTargets(batch.map((s) => s.attributes));
      const x = imagesToTensor(batch.map((s) => s.image), args.imageSize);
      const { value, grads } = namedGrads(() => classifierLoss(classifier, x, targets), params);
      try {
        optimizer.step(grads);
        const loss = (await value.data())[0]!;
        if (!Number.isFinite(loss)) throw new NumericError('training loss is not finite', { field: `step ${k}`, found: loss });
        ema = Number.isNaN(ema) ? loss : 0.98 * ema + 0.02 * loss;
      } finally {
        tf.dispose([x, value, ...Object.values(grads)]);
      }
      stepsDone = k + 1;
      onProgress?.({ label: 'evaluator', done: stepsDone, total: args.steps, info: { loss: ema, lr: optimizer.lastStep!.lrs.classifier! } });
    }
  } catch (err) {
    optimizer.dispose();
    classifier.dispose();
    throw err;
  }
  optimizer.dispose();
  const samples = Array.from({ length: args.valSamples }, (_, i) => world.sample('validation', i));
  const validation = await validateClassifier(classifier, samples, { seed: args.seed });
  return { classifier, validation, stepsDone, finalLoss: ema };
}

const round = (r: Ratio): number => Math.round(r.ratio * 10000) / 10000;

/** The numbers provenance.json records (ratios rounded to 4 digits). */
export function validationSummary(v: ClassifierValidation): Record<string, unknown> {
  const adherence = (a: ClassifierValidation['adherence']) => ({
    overall: round(a.overall),
    perCategory: Object.fromEntries(Object.entries(a.perCategory).map(([k, r]) => [k, round(r)])),
  });
  return {
    headAccuracy: Object.fromEntries(HEAD_NAMES.map((h) => [h, round(v.headAccuracy[h])])),
    headSamples: Object.fromEntries(HEAD_NAMES.map((h) => [h, v.headAccuracy[h].total])),
    adherenceOwnPrompts: adherence(v.adherence),
    adherenceShuffledPrompts: adherence(v.shuffledAdherence),
  };
}

function commandLine(args: EvaluatorArgs): string {
  const flags = Object.entries(args)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} ${String(v)}`);
  return ['aptp-trainer evaluator', ...flags].join(' ');
}

/** `evaluator`: trains the synthetic-world attribute classifier and writes the evaluator folder. */
export const evaluatorCommand: Command<typeof evaluatorSchema> = {
  name: 'evaluator',
  summary: 'train the synthetic-world attribute classifier (FID/CMMD features + prompt adherence) and write its folder',
  schema: evaluatorSchema,
  async run(args, ctx) {
    const backend = await initBackend({ backend: args.backend ?? process.env.APTP_BACKEND ?? 'wasm' });
    const bar = new ProgressBar(ctx.err);
    const started = Date.now();
    const { classifier, validation, stepsDone, finalLoss } = await trainEvaluator(args, bar.update, ctx.signal);
    try {
      const metrics = validationSummary(validation);
      classifier.save(args.out);
      writeJsonAtomic(path.join(args.out, PROVENANCE_FILE), {
        command: commandLine({ ...args, backend: backend.name }),
        seed: args.seed,
        data: {
          world: { ...new SyntheticWorld({ seed: args.seed, imageSize: args.imageSize }).config, numSamples: undefined },
          train: { split: 'train', firstIndex: 0, samples: stepsDone * args.batchSize },
          validation: { split: 'validation', firstIndex: 0, samples: args.valSamples, note: 'prompts disjoint from the train split' },
        },
        training: {
          steps: stepsDone,
          requestedSteps: args.steps,
          batchSize: args.batchSize,
          optimizer: 'AdamW (weight decay 0)',
          learningRate: args.learningRate,
          schedule: `cosine, ${args.warmupSteps} warm-up steps`,
          finalLossEma: Math.round(finalLoss * 1e4) / 1e4,
          backend: backend.name,
          durationS: Math.round((Date.now() - started) / 1000),
          params: classifier.paramCount(),
        },
        metrics,
        date: new Date().toISOString(),
        versions: { node: process.versions.node, tfjs: tf.version_core },
      });
      const acc = metrics.headAccuracy as Record<string, number>;
      ctx.out.write(
        `evaluator written to ${args.out} (${stepsDone} steps, ${classifier.paramCount()} params)\n` +
          `held-out accuracy: ${Object.entries(acc).map(([h, a]) => `${h} ${(a * 100).toFixed(1)}%`).join(', ')}\n` +
          `adherence: own prompts ${(validation.adherence.overall.ratio * 100).toFixed(1)}%, shuffled ${(validation.shuffledAdherence.overall.ratio * 100).toFixed(1)}%\n`,
      );
    } finally {
      classifier.dispose();
    }
    return 0;
  },
};
