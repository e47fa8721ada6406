import { z } from 'zod';
import { ConfigError } from '@aptp/core';
import { AdamW, ParamGroup } from './adamW';
import { LR_SCHEDULERS, lrSchedule } from './lrSchedule';

/**
 * Optimizer settings shared by every stage, in the shape of the reference YAML `training.optim` (keys camelCased),
 * with the reference values (APTP.md §1.3 pruning; §1.5 fine-tuning overrides `lrWarmupSteps` to 250). Group learning
 * rates (`hypernetLearningRate`, `quantizerLearningRate`, `unetLearningRate`) belong to the stage configs.
 */
export const optimizerConfigSchema = z.strictObject({
  adamBeta1: z.number().min(0).lt(1).default(0.9).describe('training.optim.adam_beta1 (APTP.md §1.3)'),
  adamBeta2: z.number().min(0).lt(1).default(0.999).describe('training.optim.adam_beta2 (APTP.md §1.3)'),
  adamEpsilon: z.number().min(0).default(1e-8).describe('training.optim.adam_epsilon (APTP.md §1.3)'),
  adamWeightDecay: z
    .number()
    .min(0)
    .default(0)
    .describe('decoupled AdamW decay of groups that set none: training.optim.{hypernet,quantizer,unet}_weight_decay, 0 in every APTP config (APTP.md §1.3, §1.5)'),
  scaleLr: z
    .boolean()
    .default(true)
    .describe('training.optim.scale_lr: multiply each base lr by √(grad accumulation × batch × processes) (APTP.md §1.3)'),
  lrScheduler: z.enum(LR_SCHEDULERS).default('constant_with_warmup').describe('training.optim.lr_scheduler (APTP.md §1.3)'),
  lrWarmupSteps: z
    .number()
    .int()
    .min(0)
    .default(100)
    .describe('training.optim.lr_warmup_steps: 100 pruning, 250 fine-tuning; the reference multiplies it by #processes (APTP.md §1.3, §1.5)'),
  lrStepRules: z
    .string()
    .optional()
    .describe('step rules of lrScheduler piecewise_constant, diffusers syntax "multiplier:steps,…,lastMultiplier" (e.g. "1:1100,0.35")'),
  maxGradNorm: z
    .number()
    .positive()
    .nullable()
    .default(null)
    .describe('training.optim.max_grad_norm: clip the total gradient 2-norm; null in HEAD, 1.0 in the April-2024 config (APTP.md §1.3)'),
});

export type OptimizerConfig = z.output<typeof optimizerConfigSchema>;
export type OptimizerConfigInput = z.input<typeof optimizerConfigSchema>;

/** Validates an optimizer config; a bad value is a ConfigError naming the field. */
export function parseOptimizerConfig(config: OptimizerConfigInput = {}): OptimizerConfig {
  const r = optimizerConfigSchema.safeParse(config);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const field = issue.path.length > 0 ? issue.path.join('.') : issue.code === 'unrecognized_keys' ? (issue as { keys: string[] }).keys.join(', ') : '';
  throw new ConfigError(issue.message, { code: 'E_CONFIG_FIELD', field: `optim.${field}`, found: issue.path.length > 0 ? (config as Record<string, unknown>)[String(issue.path[0])] : undefined });
}

export interface LrScaleOptions {
  /** Per-process batch size (`train_batch_size`). */
  batchSize: number;
  gradientAccumulationSteps?: number;
  numProcesses?: number;
}

/**
 * `scale_lr` of the reference (APTP.md §1.3): lr × √(gradient accumulation × per-process batch × #processes);
 * e.g. 2e-4 at batch 64 on 2 GPUs → 2e-4 × √128 = 2.26e-3. Returns `lr` unchanged when `scaleLr` is false.
 */
export function scaledLearningRate(lr: number, scaleLr: boolean, options: LrScaleOptions): number {
  if (!scaleLr) return lr;
  const total = options.batchSize * (options.gradientAccumulationSteps ?? 1) * (options.numProcesses ?? 1);
  if (!(Number.isInteger(total) && total > 0)) throw new ConfigError('scale_lr needs a positive total batch size', { field: 'batchSize', found: total });
  return lr * Math.sqrt(total);
}

/**
 * The AdamW of a stage from its optimizer config: groups (with base lrs already scaled), the config's betas, eps,
 * weight decay, clipping and lr schedule (`totalSteps` = `max_train_steps`, needed by `linear`/`cosine`).
 */
export function createAdamW(groups: ParamGroup[], config: OptimizerConfigInput, options: { totalSteps?: number } = {}): AdamW {
  const cfg = parseOptimizerConfig(config);
  return new AdamW(groups, {
    betas: [cfg.adamBeta1, cfg.adamBeta2],
    eps: cfg.adamEpsilon,
    weightDecay: cfg.adamWeightDecay,
    maxGradNorm: cfg.maxGradNorm,
    schedule: lrSchedule(cfg.lrScheduler, { warmupSteps: cfg.lrWarmupSteps, totalSteps: options.totalSteps, stepRules: cfg.lrStepRules }),
  });
}
