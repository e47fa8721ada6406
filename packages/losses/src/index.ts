/** @aptp/losses: the APTP training objectives (APTP.md §4.3, §5), differentiable in tfjs on cpu and wasm. */
export { diffusionLoss, minSnrWeights, perSampleMse, snrFromAlphasCumprod } from './diffusion';
export type { X0Weighting } from './diffusion';
export type { PredictionType } from './diffusion';
export { BLOCK_KEYS, blockDistillationLoss, distillationLoss } from './distillation';
export type { BlockKey } from './distillation';
export { RESOURCE_LOSS_TYPES, maxLoss, resourceLoss, stdLoss } from './resource';
export type { ResourceLossType } from './resource';
export { CONTRASTIVE_DEFAULTS, binaryCrossEntropy, contrastiveLoss, contrastiveSimilarities } from './contrastive';
export type { ContrastiveOptions } from './contrastive';
export { contrastiveLossSchema, defaultLossesConfig, diffusionLossSchema, lossesConfigSchema, resourceLossSchema } from './config';
export type { LossesConfig, LossesConfigInput } from './config';
export { LOSS_TERMS, lossWeights, objective, readObjective } from './objective';
export type { LossTerm, LossTerms, LossWeights, ObjectiveResult } from './objective';
