import { z } from 'zod';
import { ConfigError } from '@aptp/core';
import { dataLoaderConfigSchema, datasetConfigSchema } from '@aptp/datasets';
import { diffusionLossSchema, lossesConfigSchema } from '@aptp/losses';
import { routerConfigSchema } from '@aptp/router';
import { checkpointingConfigSchema } from '../loop/config';
import { optimizerConfigSchema } from '../optim/config';

/**
 * The APTP stage configs in the shape of the reference YAML (`configs/pruning/sd-2-1_*.yaml`,
 * `configs/finetuning/*.yaml`; keys camelCased), built from the packages' own zod schemas so every default is written
 * once, beside the code it configures (STYLE.md §3 Config):
 *
 *   seed
 *   data      { dataset (@aptp/datasets), loader (@aptp/datasets, batch size = training.trainBatchSize) }
 *   model     { pretrainedModelNameOrPath (teacher folder), promptEncoder, router (@aptp/router = hypernet + quantizer) }
 *   training  { trainBatchSize, maxTrainSteps, hypernetPretrainingSteps, losses (@aptp/losses),
 *               optim (this app + the stage's group learning rates), logging (checkpointing) }
 *
 * Defaults are the reference values (APTP.md §1.3 pruning, §1.5 fine-tuning, CC3M), except where the reference has
 * no usable default here: the teacher (the committed synthetic-world teacher instead of SD 2.1 from the hub), the
 * data (the synthetic world instead of CC3M) and the prompt encoder (the offline synthetic encoder instead of
 * all-mpnet-base-v2). `configs/*.yaml` hold the synthetic defaults and the reference SD 2.1 CC3M / COCO setups.
 */

/** Where the committed synthetic-world teacher lives (repository-relative). */
export const DEFAULT_TEACHER_DIR = 'apps/trainer/assets/teacher';

export const promptEncoderSchema = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('synthetic').describe('offline hashed bag-of-words encoder of @aptp/router (no weights)'),
    dim: z.number().int().positive().default(768).describe('embedding width (768 = all-mpnet-base-v2, the reference predictor input)'),
    seed: z.number().int().min(0).default(0).describe('projection seed'),
  }),
  z.strictObject({
    type: z.literal('sentenceTransformer').describe('all-mpnet-base-v2 layout (tokenizer.json, config.json, onnx/model.onnx), APTP.md §2.1'),
    path: z.string().min(1).describe('local model folder (--prompt_encoder_model_name_or_path)'),
  }),
]);
export type PromptEncoderConfig = z.output<typeof promptEncoderSchema>;

const dataSchema = z.strictObject({
  dataset: datasetConfigSchema.prefault({ format: 'synthetic' }).describe('data.dataset_name / data_dir: the training set (@aptp/datasets config), APTP.md §7'),
  loader: dataLoaderConfigSchema
    .omit({ batchSize: true })
    .prefault({ transform: 'synthetic' })
    .describe('order, augmentation and transform (@aptp/datasets); the batch size is training.trainBatchSize'),
});

const modelSchema = z.strictObject({
  pretrainedModelNameOrPath: z
    .string()
    .min(1)
    .default(DEFAULT_TEACHER_DIR)
    .describe('--pretrained_model_name_or_path: the teacher model folder (unet/, scheduler/, text conditioner); reference SD 2.1, APTP.md §1.2'),
  promptEncoder: promptEncoderSchema.default({ type: 'synthetic', dim: 768, seed: 0 }).describe('--prompt_encoder_model_name_or_path, APTP.md §2.1'),
  router: routerConfigSchema.prefault({}).describe('model.hypernet + model.quantizer (@aptp/router), APTP.md §1.3, §2'),
});

export const BASELINES = ['none', 'singleArch', 'random', 'noOt'] as const;
export type Baseline = (typeof BASELINES)[number];

const pruneOptimSchema = optimizerConfigSchema.extend({
  hypernetLearningRate: z.number().min(0).default(2e-4).describe('training.optim.hypernet_learning_rate (APTP.md §1.3)'),
  quantizerLearningRate: z.number().min(0).default(2e-4).describe('training.optim.quantizer_learning_rate (APTP.md §1.3)'),
  unetLearningRate: z.number().min(0).default(5e-5).describe('training.optim.unet_learning_rate; its group is empty (UNet frozen), APTP.md §1.3'),
});

/** Pruning stage (APTP stage 1; APTP.md §1.3). */
export const pruneConfigSchema = z.strictObject({
  seed: z.number().int().min(0).default(43).describe('--seed (APTP.md §1.2)'),
  data: dataSchema.prefault({}),
  model: modelSchema.prefault({}),
  training: z
    .strictObject({
      trainBatchSize: z.number().int().positive().default(64).describe('training.train_batch_size per process (APTP.md §1.3)'),
      maxTrainSteps: z.number().int().min(0).default(5000).describe('training.max_train_steps (APTP.md §1.3)'),
      hypernetPretrainingSteps: z
        .number()
        .int()
        .min(0)
        .default(500)
        .describe('training.hypernet_pretraining_steps: steps where the UNet is gated by the predictor output directly (APTP.md §1.3, §2.6)'),
      losses: lossesConfigSchema.prefault({}),
      optim: pruneOptimSchema.prefault({}),
      logging: checkpointingConfigSchema.prefault({}),
    })
    .prefault({}),
  baseline: z
    .enum(BASELINES)
    .default('none')
    .describe('none = APTP; singleArch = one learned architecture for all prompts (uni_arch); random = one random architecture, no training; noOt = cosine-argmax training assignment (APTP.md §1.7)'),
  singleArchMacsRatio: z
    .number()
    .gt(0)
    .max(1)
    .nullable()
    .default(null)
    .describe('singleArch only: export the learned architecture at this MACs ratio (total MACs / teacher; a constant logit offset found by bisection) instead of the noise-free sample (null, the reference); compares the baseline with APTP at the same MACs'),
});
export type PruneConfig = z.output<typeof pruneConfigSchema>;
export type PruneConfigInput = z.input<typeof pruneConfigSchema>;

const finetuneOptimSchema = optimizerConfigSchema.extend({
  lrWarmupSteps: z.number().int().min(0).default(250).describe('training.optim.lr_warmup_steps: 250 in fine-tuning (APTP.md §1.5)'),
  unetLearningRate: z.number().min(0).default(1e-5).describe('training.optim.unet_learning_rate (× √total batch with scaleLr), APTP.md §1.5'),
});

/** Fine-tuning losses: the CC3M weights (APTP.md §1.5); the pruning-only terms are not used. */
const finetuneLossesSchema = z.strictObject({
  diffusionLoss: diffusionLossSchema.extend({
    weight: z.number().min(0).default(0.01).describe('training.losses.diffusion_loss.weight: 0.01 CC3M, 1.0 COCO (APTP.md §1.5)'),
  }).prefault({}),
  distillationLoss: z.strictObject({ weight: z.number().min(0).default(0.5).describe('training.losses.distillation_loss.weight: 0.5 CC3M, 0.2 COCO (APTP.md §1.5)') }).prefault({}),
  blockLoss: z.strictObject({ weight: z.number().min(0).default(0.5).describe('training.losses.block_loss.weight: 0.5 CC3M, 0.2 COCO (APTP.md §1.5)') }).prefault({}),
});

/** Fine-tuning stage (APTP.md §1.5, §6.3). */
export const finetuneConfigSchema = z.strictObject({
  seed: z.number().int().min(0).default(43).describe('--seed (APTP.md §1.2)'),
  data: dataSchema.prefault({}),
  model: z
    .strictObject({
      pretrainedModelNameOrPath: modelSchema.shape.pretrainedModelNameOrPath,
    })
    .prefault({}),
  training: z
    .strictObject({
      trainBatchSize: z.number().int().positive().default(128).describe('training.train_batch_size per process (APTP.md §1.5)'),
      maxTrainSteps: z.number().int().min(0).default(30000).describe('training.max_train_steps (APTP.md §1.5)'),
      losses: finetuneLossesSchema.prefault({}),
      optim: finetuneOptimSchema.prefault({}),
      logging: checkpointingConfigSchema.prefault({}),
    })
    .prefault({}),
});
export type FinetuneConfig = z.output<typeof finetuneConfigSchema>;
export type FinetuneConfigInput = z.input<typeof finetuneConfigSchema>;

/** The shared optimizer settings of a stage's `training.optim` (without the stage's group learning rates). */
export function optimizerSettings(optim: Record<string, unknown>): z.input<typeof optimizerConfigSchema> {
  const keys = Object.keys(optimizerConfigSchema.shape);
  return Object.fromEntries(Object.entries(optim).filter(([k]) => keys.includes(k))) as z.input<typeof optimizerConfigSchema>;
}

function fieldPath(p: readonly PropertyKey[]): string {
  return p.map((k, i) => (typeof k === 'number' ? `[${k}]` : i === 0 ? String(k) : `.${String(k)}`)).join('');
}

function valueAt(raw: unknown, p: readonly PropertyKey[]): unknown {
  let v = raw;
  for (const k of p) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[k];
  }
  return v;
}

/** Validates a stage config; the ConfigError names the full field path (`training.losses.resourceLoss.pruningTarget`). */
export function parseStageConfig<S extends z.ZodType>(schema: S, raw: unknown, file?: string): z.output<S> {
  const r = schema.safeParse(raw ?? {});
  if (r.success) return r.data;
  let issue = r.error.issues[0]!;
  let p: PropertyKey[] = [...issue.path];
  while (issue.code === 'invalid_union' && (issue as { errors?: z.core.$ZodIssue[][] }).errors?.length) {
    const branches = (issue as unknown as { errors: z.core.$ZodIssue[][] }).errors.map((b) => b[0]!).filter(Boolean);
    const deepest = branches.reduce((a, b) => (b.path.length > a.path.length ? b : a));
    p = [...p, ...deepest.path];
    issue = deepest;
  }
  if (issue.code === 'unrecognized_keys') {
    const keys = (issue as { keys: string[] }).keys;
    throw new ConfigError('unknown key', { code: 'E_CONFIG_FIELD', file, field: fieldPath([...p, keys[0]!]), cause: r.error });
  }
  throw new ConfigError(issue.message, { code: 'E_CONFIG_FIELD', file, field: fieldPath(p) || '(root)', found: valueAt(raw, p), cause: r.error });
}

export function parsePruneConfig(raw: unknown, file?: string): PruneConfig {
  return parseStageConfig(pruneConfigSchema, raw, file);
}

export function parseFinetuneConfig(raw: unknown, file?: string): FinetuneConfig {
  return parseStageConfig(finetuneConfigSchema, raw, file);
}

/** The reference defaults of both stages (what an empty config resolves to). */
export function referenceDefaults(): { prune: PruneConfig; finetune: FinetuneConfig } {
  return { prune: parsePruneConfig({}), finetune: parseFinetuneConfig({}) };
}
