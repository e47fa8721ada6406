import * as path from 'node:path';
import { ConfigError, HostTensor, readSafetensors, writeJsonAtomic, writeSafetensors } from '@aptp/core';
import type { ArchitectureLayout } from '@aptp/unet-gating';
import { z } from 'zod';
import { ArchitectureCodebook } from '../codebook';
import { RouterConfig, parseRouterConfig } from '../config';
import { ArchitecturePredictor } from '../predictor';
import { PromptRouter } from '../router';
import { readJsonFile, requireFiles, sameStructure } from './files';

/**
 * The released APTP router layout (HF `rezashkv/diffusion_pruning`, a pruning checkpoint; APTP.md §1.2, §1.4):
 *
 *   hypernet/config.json                       HyperStructure config (snake_case)
 *   hypernet/diffusion_pytorch_model.safetensors   mh_fc.{i}.weight [w_i, input_dim], mh_fc.{i}.bias [w_i]
 *   quantizer/config.json                      StructureVectorQuantizer config
 *   quantizer/diffusion_pytorch_model.safetensors  embedding.weight [K, L], embedding_gs [K, L]
 *
 * Both configs carry the UNet's `structure` ({width, depth} per sub-block); it must equal the layout's. Missing keys
 * take the reference classes' defaults; `_` keys are ignored; unknown keys and unsupported values are `ConfigError`s.
 * Weight-normalised heads (`wn_flag: true`, parametrizations `original0`/`original1`) are folded into plain weights.
 */
export const HYPERNET_FILES = ['hypernet/config.json', 'hypernet/diffusion_pytorch_model.safetensors'] as const;
export const QUANTIZER_FILES = ['quantizer/config.json', 'quantizer/diffusion_pytorch_model.safetensors'] as const;

const structureSchema = z.object({ width: z.array(z.array(z.number().int().positive())), depth: z.array(z.array(z.number().int().min(0).max(1))) });

const hypernetSchema = z
  .object({
    input_dim: z.number().int().positive().default(768),
    structure: structureSchema,
    wn_flag: z.boolean().default(true),
    linear_bias: z.boolean().default(false),
    single_arch_param: z.boolean().default(false),
  })
  .strict();

const quantizerSchema = z
  .object({
    n_e: z.number().int().positive(),
    structure: structureSchema,
    beta: z.number().default(0.25), // unused by the reference (no commitment loss)
    remap: z.null().default(null),
    unknown_index: z.string().default('random'), // only used with remap
    sane_index_shape: z.boolean().default(true),
    temperature: z.number().positive().default(0.4),
    base: z.number().default(2),
    depth_order: z.array(z.number().int()).nullable().default(null),
    non_zero_width: z.boolean().default(true),
    sinkhorn_epsilon: z.number().positive().default(0.05),
    sinkhorn_iterations: z.number().int().nonnegative().default(3),
    resource_aware_normalization: z.boolean().nullable().default(true),
    optimal_transport: z.boolean().default(true),
  })
  .strict();

function parseDiffusersConfig<T extends z.ZodTypeAny>(schema: T, json: unknown, file: string): z.output<T> {
  if (typeof json !== 'object' || json === null) throw new ConfigError('config must be a JSON object', { file, found: typeof json });
  const plain = Object.fromEntries(Object.entries(json).filter(([k]) => !k.startsWith('_')));
  const r = schema.safeParse(plain);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const keys = (issue as { keys?: string[] }).keys;
    const field = issue.path.join('.') || keys?.join(', ') || '(root)';
    throw new ConfigError(issue.code === 'unrecognized_keys' ? 'unsupported config key' : issue.message, { code: 'E_CONFIG_FIELD', file, field, cause: r.error });
  }
  return r.data;
}

export interface LoadReferenceRouterOptions {
  /** The gate layout of the UNet the router drives (from `@aptp/unet-gating`). */
  layout: ArchitectureLayout;
  /** Rows per eval-routing batch (our setting, not in the reference files; default 2048). */
  evalBatchSize?: number;
}

/** Loads a router saved in the released APTP layout (`dir` holds `hypernet/` and `quantizer/`). */
export function loadReferenceRouter(dir: string, options: LoadReferenceRouterOptions): PromptRouter {
  requireFiles(dir, [...HYPERNET_FILES, ...QUANTIZER_FILES], 'APTP router (hypernet/ + quantizer/)');
  const { layout } = options;
  const hFile = path.join(dir, HYPERNET_FILES[0]);
  const qFile = path.join(dir, QUANTIZER_FILES[0]);
  const h = parseDiffusersConfig(hypernetSchema, readJsonFile(hFile), hFile);
  const q = parseDiffusersConfig(quantizerSchema, readJsonFile(qFile), qFile);
  for (const [file, s] of [[hFile, h.structure], [qFile, q.structure]] as const) {
    if (!sameStructure(s, layout.structure)) {
      throw new ConfigError('structure does not match the UNet gate layout', { code: 'E_STRUCTURE', file, field: 'structure', expected: `${layout.widthGates.length} width gates / ${layout.depthEntries} depth gates (L = ${layout.vectorLength})`, found: `${s.width.flat().length} width gates / ${s.depth.flat().filter((d) => d === 1).length} depth gates` });
    }
  }
  if (q.resource_aware_normalization !== false) {
    throw new ConfigError('resource-aware normalisation is not supported (disabled in every reference config)', { file: qFile, field: 'resource_aware_normalization', expected: false, found: q.resource_aware_normalization });
  }
  if (!q.sane_index_shape) throw new ConfigError('unsupported value', { file: qFile, field: 'sane_index_shape', expected: true, found: false });
  const cfg: RouterConfig = parseRouterConfig(
    {
      inputDim: h.input_dim,
      numCodes: q.n_e,
      temperature: q.temperature,
      base: q.base,
      depthOrder: q.depth_order ?? Array.from({ length: layout.depthEntries }, (_, i) => i),
      nonZeroWidth: q.non_zero_width,
      optimalTransport: q.optimal_transport,
      sinkhornEpsilon: q.sinkhorn_epsilon,
      sinkhornIterations: q.sinkhorn_iterations,
      linearBias: h.linear_bias,
      singleArchParam: h.single_arch_param,
      ...(options.evalBatchSize !== undefined ? { evalBatchSize: options.evalBatchSize } : {}),
    },
    qFile,
  );
  const hWeights = path.join(dir, HYPERNET_FILES[1]);
  let hTensors = readSafetensors(hWeights);
  if (h.wn_flag && !h.single_arch_param) hTensors = foldWeightNorm(hTensors);
  const predictor = ArchitecturePredictor.fromReferenceTensors(layout, hTensors, { inputDim: cfg.inputDim, linearBias: cfg.linearBias, singleArchParam: cfg.singleArchParam }, hWeights);
  let codebook: ArchitectureCodebook;
  try {
    const qWeights = path.join(dir, QUANTIZER_FILES[1]);
    codebook = ArchitectureCodebook.fromReferenceTensors(layout, readSafetensors(qWeights), cfg.numCodes, qWeights);
  } catch (err) {
    predictor.dispose();
    throw err;
  }
  return new PromptRouter(cfg, layout, predictor, codebook);
}

/** `weight = g · v / ‖v‖` per output row (torch `weight_norm`, dim 0): `original0` = g `[w, 1]`, `original1` = v. */
function foldWeightNorm(tensors: Map<string, HostTensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const [name, t] of tensors) {
    const m = /^(mh_fc\.\d+)\.parametrizations\.weight\.original([01])$/.exec(name);
    if (!m) {
      out.set(name, t);
      continue;
    }
    if (m[2] === '0') continue;
    const g = tensors.get(`${m[1]}.parametrizations.weight.original0`);
    const [rows, cols] = t.shape as [number, number];
    if (!g || g.data.length !== rows) throw new ConfigError('weight-norm tensors incomplete', { field: `${m[1]}.parametrizations.weight.original0`, expected: [rows, 1], found: g?.shape ?? 'missing' });
    const v = t.data as Float32Array;
    const w = new Float32Array(rows * cols);
    for (let r = 0; r < rows; r++) {
      let n = 0;
      for (let c = 0; c < cols; c++) n += v[r * cols + c]! * v[r * cols + c]!;
      const s = Number((g.data as Float32Array)[r]) / Math.sqrt(n);
      for (let c = 0; c < cols; c++) w[r * cols + c] = v[r * cols + c]! * s;
    }
    out.set(`${m[1]}.weight`, { dtype: 'float32', shape: [rows, cols], data: w });
  }
  return out;
}

/** Writes a router in the released APTP layout (`dir/hypernet/`, `dir/quantizer/`), readable by the reference. */
export function saveReferenceRouter(router: PromptRouter, dir: string): void {
  const c = router.config;
  const structure = router.layout.structure;
  writeJsonAtomic(path.join(dir, HYPERNET_FILES[0]), {
    _class_name: 'HyperStructure',
    _diffusers_version: '0.23.1',
    input_dim: c.inputDim,
    linear_bias: c.linearBias,
    single_arch_param: c.singleArchParam,
    structure,
    wn_flag: false,
  });
  writeSafetensors(path.join(dir, HYPERNET_FILES[1]), router.predictor.referenceTensors());
  writeJsonAtomic(path.join(dir, QUANTIZER_FILES[0]), {
    _class_name: 'StructureVectorQuantizer',
    _diffusers_version: '0.23.1',
    base: c.base,
    beta: 0.25,
    depth_order: c.depthOrder,
    n_e: c.numCodes,
    non_zero_width: c.nonZeroWidth,
    optimal_transport: c.optimalTransport,
    remap: null,
    resource_aware_normalization: false,
    sane_index_shape: true,
    sinkhorn_epsilon: c.sinkhornEpsilon,
    sinkhorn_iterations: c.sinkhornIterations,
    structure,
    temperature: c.temperature,
    unknown_index: 'random',
  });
  writeSafetensors(path.join(dir, QUANTIZER_FILES[1]), router.codebook.referenceTensors());
}
