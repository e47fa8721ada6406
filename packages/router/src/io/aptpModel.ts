import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { ConfigError, HostTensor, readSafetensors, writeJsonAtomic, writeSafetensors } from '@aptp/core';
import { ArchitectureLayout, architectureLayout, readUNetConfig, withAptpGating } from '@aptp/unet-gating';
import { ArchitectureCodebook } from '../codebook';
import { parseRouterConfig, routerConfigSchema } from '../config';
import { ArchitecturePredictor } from '../predictor';
import { PromptRouter } from '../router';
import { readJsonFile, requireFiles, sameStructure } from './files';
import { HYPERNET_FILES, QUANTIZER_FILES, loadReferenceRouter } from './reference';

/**
 * Our router folder and the model-folder manifest.
 *
 * Router folder (our format; `saveRouter` / `loadRouter`):
 *   config.json        {"_class_name": "PromptRouter", "formatVersion": 1, "config": RouterConfig (camelCase),
 *                       "structure": the layout's {width, depth}}   — strict: unknown keys are errors
 *   router.safetensors `hypernet.mh_fc.{i}.weight|bias` (or `hypernet.arch`), `quantizer.embedding.weight`,
 *                      `quantizer.embedding_gs` — the reference tensors and names, prefixed by their module
 *
 * Model folder (`loadAptpRouter`): `unet/config.json` (defines the gate layout; a plain SD 2.1 config is gated as
 * APTP does) and the router either as `router/` (ours) or as `hypernet/` + `quantizer/` (a released APTP checkpoint).
 */
export const ROUTER_FILES = ['config.json', 'router.safetensors'] as const;

const routerFileSchema = z.strictObject({
  _class_name: z.literal('PromptRouter'),
  formatVersion: z.literal(1),
  config: routerConfigSchema,
  structure: z.strictObject({ width: z.array(z.array(z.number().int().positive())), depth: z.array(z.array(z.number().int())) }),
});

/** Writes a router in our format (atomic files). */
export function saveRouter(router: PromptRouter, dir: string): void {
  const tensors: Record<string, HostTensor> = {};
  for (const [k, v] of Object.entries(router.predictor.referenceTensors())) tensors[`hypernet.${k}`] = v;
  for (const [k, v] of Object.entries(router.codebook.referenceTensors())) tensors[`quantizer.${k}`] = v;
  writeSafetensors(path.join(dir, ROUTER_FILES[1]), tensors, { metadata: { format: 'pt', producer: '@aptp/router' } });
  writeJsonAtomic(path.join(dir, ROUTER_FILES[0]), { _class_name: 'PromptRouter', formatVersion: 1, config: router.config, structure: router.layout.structure });
}

/** Loads a router saved by {@link saveRouter} for the given gate layout. */
export function loadRouter(dir: string, options: { layout: ArchitectureLayout }): PromptRouter {
  requireFiles(dir, ROUTER_FILES, 'router');
  const file = path.join(dir, ROUTER_FILES[0]);
  const parsed = routerFileSchema.safeParse(readJsonFile(file));
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ConfigError(issue.message, { code: 'E_CONFIG_FIELD', file, field: issue.path.join('.') || ((issue as { keys?: string[] }).keys ?? []).join(', ') || '(root)', cause: parsed.error });
  }
  const { layout } = options;
  if (!sameStructure(parsed.data.structure, layout.structure)) {
    throw new ConfigError('structure does not match the UNet gate layout', { code: 'E_STRUCTURE', file, field: 'structure', expected: `L = ${layout.vectorLength}`, found: `L = ${parsed.data.structure.width.flat().reduce((a, b) => a + b, 0) + parsed.data.structure.depth.flat().filter((d) => d === 1).length}` });
  }
  const cfg = parseRouterConfig(parsed.data.config, file);
  const weights = path.join(dir, ROUTER_FILES[1]);
  const all = readSafetensors(weights);
  const part = (prefix: string): Map<string, HostTensor> => {
    const m = new Map<string, HostTensor>();
    for (const [k, v] of all) if (k.startsWith(prefix)) m.set(k.slice(prefix.length), v);
    return m;
  };
  for (const k of all.keys()) {
    if (!k.startsWith('hypernet.') && !k.startsWith('quantizer.')) throw new ConfigError('unexpected tensor', { file: weights, field: k, expected: 'hypernet.* or quantizer.*' });
  }
  const predictor = ArchitecturePredictor.fromReferenceTensors(layout, part('hypernet.'), { inputDim: cfg.inputDim, linearBias: cfg.linearBias, singleArchParam: cfg.singleArchParam }, weights);
  let codebook: ArchitectureCodebook;
  try {
    codebook = ArchitectureCodebook.fromReferenceTensors(layout, part('quantizer.'), cfg.numCodes, weights);
  } catch (err) {
    predictor.dispose();
    throw err;
  }
  return new PromptRouter(cfg, layout, predictor, codebook);
}

/** The gate layout of a model folder's UNet (`unet/config.json`; plain SD 2.1 configs are gated as APTP does). */
export function modelLayout(modelDir: string): ArchitectureLayout {
  requireFiles(modelDir, ['unet/config.json'], 'APTP model');
  const cfg = readUNetConfig(path.join(modelDir, 'unet/config.json'));
  const plain = cfg.midBlockGating === 'none' && cfg.downBlockGating.every((g) => g === 'none') && cfg.upBlockGating.every((g) => g === 'none');
  return architectureLayout(plain ? withAptpGating(cfg) : cfg);
}

/**
 * Loads the router of a model folder: `router/` (ours) if present, else `hypernet/` + `quantizer/` (released APTP);
 * the layout comes from `unet/config.json` unless given.
 */
export function loadAptpRouter(modelDir: string, options: { layout?: ArchitectureLayout; evalBatchSize?: number } = {}): PromptRouter {
  const layout = options.layout ?? modelLayout(modelDir);
  if (fs.existsSync(path.join(modelDir, 'router', ROUTER_FILES[0]))) return loadRouter(path.join(modelDir, 'router'), { layout });
  const released = [...HYPERNET_FILES, ...QUANTIZER_FILES];
  if (released.some((f) => fs.existsSync(path.join(modelDir, f)))) {
    return loadReferenceRouter(modelDir, { layout, ...(options.evalBatchSize !== undefined ? { evalBatchSize: options.evalBatchSize } : {}) });
  }
  requireFiles(modelDir, ROUTER_FILES.map((f) => `router/${f}`), 'APTP model (router/ or hypernet/ + quantizer/)');
  throw new ConfigError('unreachable');
}
