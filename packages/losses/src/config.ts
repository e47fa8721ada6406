import { z } from 'zod';
import { RESOURCE_LOSS_TYPES } from './resource';

/**
 * Loss configuration, in the shape of the reference YAML `training.losses` (keys camelCased), with the reference
 * pruning-stage defaults written once here (APTP.md §1.3, configs/pruning/sd-2-1_*.yaml; used by train_step.json):
 * diffusion 1 (min-SNR γ 5), resource 2 (log, p = 0.6), contrastive 100 (τ 0.03 / 0.03), distillation 0.2,
 * block 0.2, std 0.1, max 0.1. Fine-tuning (APTP.md §1.5) overrides diffusion / distillation / block weights
 * (CC3M 0.01 / 0.5 / 0.5; COCO 1 / 0.2 / 0.2) and leaves the pruning-only terms unused.
 */
const weight = (yamlKey: string, value: number) =>
  z.number().min(0).default(value).describe(`training.losses.${yamlKey}.weight (APTP.md §1.3, §5)`);

export const diffusionLossSchema = z.strictObject({
  weight: weight('diffusion_loss', 1).describe('training.losses.diffusion_loss.weight; the reference Pruner does not apply it (APTP.md §1.3), we do (1 = same result)'),
  snrGamma: z.number().positive().nullable().default(5).describe('training.losses.diffusion_loss.snr_gamma: min-SNR γ; null = plain MSE (APTP.md §5.1)'),
});

export const resourceLossSchema = z.strictObject({
  weight: weight('resource_loss', 2),
  type: z.enum(RESOURCE_LOSS_TYPES).default('log').describe('training.losses.resource_loss.type: log | mae | mse (APTP.md §4.3)'),
  pruningTarget: z
    .number()
    .gt(0)
    .lte(1)
    .default(0.6)
    .describe('training.losses.resource_loss.pruning_target: p, a fraction of total MACs; the loss uses p\' = 1 − (1 − p)·T/D (APTP.md §4.3)'),
});

export const contrastiveLossSchema = z.strictObject({
  weight: weight('contrastive_loss', 100),
  archVectorTemperature: z.number().positive().default(0.03).describe('training.losses.contrastive_loss.arch_vector_temperature (APTP.md §5.5)'),
  promptEmbeddingTemperature: z.number().positive().default(0.03).describe('training.losses.contrastive_loss.prompt_embedding_temperature (APTP.md §5.5)'),
});

const weightOnly = (yamlKey: string, value: number, section: string) =>
  z.strictObject({ weight: weight(yamlKey, value).describe(`training.losses.${yamlKey}.weight (APTP.md ${section})`) });

export const lossesConfigSchema = z.strictObject({
  diffusionLoss: diffusionLossSchema.prefault({}),
  resourceLoss: resourceLossSchema.prefault({}),
  contrastiveLoss: contrastiveLossSchema.prefault({}),
  distillationLoss: weightOnly('distillation_loss', 0.2, '§5.2').prefault({}),
  blockLoss: weightOnly('block_loss', 0.2, '§5.3').prefault({}),
  stdLoss: weightOnly('std_loss', 0.1, '§4.3, §5.6').prefault({}),
  maxLoss: weightOnly('max_loss', 0.1, '§4.3, §5.6').prefault({}),
});

export type LossesConfig = z.output<typeof lossesConfigSchema>;
export type LossesConfigInput = z.input<typeof lossesConfigSchema>;

/** The reference pruning-stage loss configuration. */
export function defaultLossesConfig(): LossesConfig {
  return lossesConfigSchema.parse({});
}
