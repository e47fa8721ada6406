import { z } from 'zod';
import { ConfigError } from '@aptp/core';
import { imageTransformSchema, TRANSFORM_PRESETS, transformPreset, type ImageTransform, type TransformPresetName } from './image/transforms';
import type { Source } from './source';
import { cc3mConfigSchema, openCc3m } from './sources/cc3m';
import { coco2014ConfigSchema, openCoco2014 } from './sources/coco';
import { coco30kConfigSchema, openCoco30k } from './sources/coco30k';
import { imageFolderConfigSchema, openImageFolder } from './sources/imageFolder';
import { openWebDataset, webDatasetConfigSchema } from './sources/webdataset';
import { openSynthetic, syntheticConfigSchema } from './synthetic/world';

/**
 * Data set configs: one strict zod object per format, chosen by `format`. Unknown keys are errors; every error names
 * the config file (when given) and the field path, e.g. `configs/data.yaml: data.root: expected string, found undefined`.
 */
export const datasetConfigSchema = z.discriminatedUnion('format', [
  cc3mConfigSchema,
  webDatasetConfigSchema,
  coco2014ConfigSchema,
  coco30kConfigSchema,
  imageFolderConfigSchema,
  syntheticConfigSchema,
]);
export type DatasetConfig = z.input<typeof datasetConfigSchema>;
export type ResolvedDatasetConfig = z.output<typeof datasetConfigSchema>;

export const DATASET_FORMATS = ['cc3m', 'webdataset', 'coco2014', 'coco30k', 'imageFolder', 'synthetic'] as const;

/** How batches are drawn (reference values: batch 128/GPU is the trainer's; seed 43, shuffle for train, §1.2–1.5). */
export const dataLoaderConfigSchema = z.strictObject({
  batchSize: z.number().int().positive().default(8).describe('samples per batch (reference `train_batch_size`, §1.3)'),
  seed: z.number().int().default(43).describe('order and augmentation seed (reference `--seed 43`, §1.2)'),
  shuffle: z.boolean().default(true).describe('seeded shuffle each epoch (reference: shuffle for train, §7.3)'),
  transform: z
    .union([z.enum(Object.keys(TRANSFORM_PRESETS) as [TransformPresetName, ...TransformPresetName[]]), imageTransformSchema])
    .default('train')
    .describe('a preset name (train | eval | evalCenter | coco30kReference | synthetic) or a transform object (§7.3)'),
  resolution: z.number().int().positive().default(256).describe('image side for preset transforms (reference `resolution: 256`, §1.3)'),
  epochs: z.number().min(1).default(1).describe('epochs to iterate (Infinity for step-based training)'),
  dropLast: z.boolean().default(false).describe('drop the last, smaller batch of an epoch'),
  shuffleBuffer: z.number().int().positive().default(1000).describe('WebDataset in-shard shuffle buffer'),
});
export type DataLoaderConfig = z.input<typeof dataLoaderConfigSchema>;

function fieldPath(p: readonly PropertyKey[]): string {
  return p.map((k, i) => (typeof k === 'number' ? `[${k}]` : i === 0 ? String(k) : `.${String(k)}`)).join('');
}

/** Turns a zod failure into a one-line ConfigError naming the file and the first bad field. */
export function configErrorFromZod(err: z.ZodError, options: { file?: string; prefix?: string } = {}): ConfigError {
  let issue = err.issues[0]!;
  let path: PropertyKey[] = [...issue.path];
  // A union (preset name | transform object): report the branch that got furthest into the value.
  while (issue.code === 'invalid_union' && (issue as { errors?: z.core.$ZodIssue[][] }).errors?.length) {
    const branches = (issue as unknown as { errors: z.core.$ZodIssue[][] }).errors.map((b) => b[0]!).filter(Boolean);
    const deepest = branches.reduce((a, b) => (b.path.length > a.path.length ? b : a));
    path = [...path, ...deepest.path];
    issue = deepest;
  }
  const prefix = options.prefix ? [options.prefix] : [];
  if (issue.code === 'unrecognized_keys') {
    const keys = (issue as { keys: string[] }).keys;
    return new ConfigError(`unknown key${keys.length > 1 ? `s ${keys.join(', ')}` : ''}`, { code: 'E_CONFIG_FIELD', file: options.file, field: fieldPath([...prefix, ...path, keys[0]!]), cause: err });
  }
  const where = fieldPath([...prefix, ...path]);
  const found = (issue as { input?: unknown }).input;
  return new ConfigError(issue.message, { code: 'E_CONFIG_FIELD', file: options.file, field: where || '(root)', found, cause: err });
}

export function parseDatasetConfig(raw: unknown, file?: string): ResolvedDatasetConfig {
  const r = datasetConfigSchema.safeParse(raw);
  if (!r.success) throw configErrorFromZod(r.error, { file });
  return r.data;
}

export function parseDataLoaderConfig(raw: unknown, file?: string): z.output<typeof dataLoaderConfigSchema> {
  const r = dataLoaderConfigSchema.safeParse(raw);
  if (!r.success) throw configErrorFromZod(r.error, { file });
  return r.data;
}

/** The transform a loader config asks for. */
export function resolveTransform(c: z.output<typeof dataLoaderConfigSchema>): ImageTransform {
  return typeof c.transform === 'string' ? transformPreset(c.transform, c.resolution) : c.transform;
}

/** Opens the source a (validated or raw) config describes. */
export async function openSource(raw: unknown, file?: string): Promise<Source<unknown>> {
  const c = parseDatasetConfig(raw, file);
  switch (c.format) {
    case 'cc3m':
      return openCc3m(c);
    case 'webdataset':
      return openWebDataset(c);
    case 'coco2014':
      return openCoco2014(c);
    case 'coco30k':
      return openCoco30k(c);
    case 'imageFolder':
      return openImageFolder(c);
    case 'synthetic':
      return openSynthetic(c);
  }
}
