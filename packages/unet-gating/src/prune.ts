import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { ConfigError, InputError, SafetensorsReader, ShapeError, readSafetensors, writeJsonAtomic, writeSafetensors } from '@aptp/core';
import type { HostTensor } from '@aptp/core';
import { parseUNetConfig } from './config';
import type { UNetConfig } from './config';
import { aptpLayout } from './gates/layout';
import type { ArchitectureLayout } from './gates/layout';
import { hardArchitecture } from './gates/vector';

/**
 * Physical pruning of a gated UNet into a dense expert (APTP.md §6.2, golden/aptp/README.md §9): the **pretrained**
 * weights are sliced for one hard architecture vector (kept rows/columns keep their order).
 *
 * - ResNet, kept: `conv1` and `time_emb_proj` keep the output rows of kept norm2 groups (each group = C_out/groups
 *   contiguous channels), `norm2` keeps those channels (a GroupNorm with #kept groups), `conv2` keeps those input
 *   columns; `conv2.bias`, `norm1`, `conv_shortcut` unchanged.
 * - Attention (attn1 and attn2), kept transformer: `to_q/to_k/to_v` keep the rows of kept heads, `to_out.0` the
 *   columns; head size unchanged. Feed-forward: `ff.net.0.proj` keeps rows u and 4C+u of every kept unit u (value and
 *   gate halves of GEGLU), `ff.net.2` keeps the columns of kept units; biases of outputs unchanged.
 * - A sub-block whose depth gate is 0 is removed (all its tensors); the forward then passes its input through (for an
 *   up-block ResNet: the hidden-state part of its concatenated input, ignoring the skip).
 *
 * Expert folder (see README "Pruned experts"): `config.json` (a plain diffusers UNet config + `_aptp_pruned`),
 * `diffusion_pytorch_model.safetensors` (pruned weights, unchanged names) and `arch_vector.safetensors`
 * (`arch_vector` `[1, L]`, the hard 0/1 vector).
 */

export interface PrunedResnet {
  kind: 'resnet';
  name: string;
  dropped: boolean;
  inChannels: number;
  outChannels: number;
  hasConvShortcut: boolean;
  /** Channels per norm2 group (unchanged by pruning). */
  channelsPerGroup: number;
  /** time_emb_proj rows are [scale; shift] (`scale_shift`): both halves keep the kept channels. */
  timeScaleShift: boolean;
  /** Indices of kept norm2 groups, ascending. */
  keptGroups: number[];
  /** Indices of kept conv1-output / norm2 / conv2-input channels, ascending. */
  keptChannels: number[];
}

export interface PrunedTransformer {
  kind: 'transformer';
  name: string;
  dropped: boolean;
  channels: number;
  headDim: number;
  /** Indices of kept self-attention (attn1) and cross-attention (attn2) heads. */
  attn1Heads: number[];
  attn2Heads: number[];
  /** Indices of kept GEGLU inner units (of each half, 0 … 4C−1); all 4C when feed-forward is not gated. */
  ffUnits: number[];
}

export type PrunedSubBlock = PrunedResnet | PrunedTransformer;

export interface PrunedArchitecture {
  layout: ArchitectureLayout;
  /** The hard (0/1) architecture vector, length L. */
  archVector: Float32Array;
  /** One entry per layout sub-block, in layout order. */
  subBlocks: PrunedSubBlock[];
}

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

function expand(kept: boolean[], per: number): number[] {
  const out: number[] = [];
  kept.forEach((k, g) => {
    if (k) for (let c = 0; c < per; c++) out.push(g * per + c);
  });
  return out;
}

/**
 * The pruning plan of one architecture-vector row (hardened at 0.5). A kept sub-block must keep at least one element
 * of each width gate (the router's non-zero rule guarantees it; APTP.md §2.4).
 */
export function prunedArchitecture(layout: ArchitectureLayout, row: ArrayLike<number>): PrunedArchitecture {
  const hard = hardArchitecture(layout, row);
  const archVector = new Float32Array(layout.vectorLength);
  layout.widthGates.forEach((g, i) => hard.width[i]!.forEach((k, j) => (archVector[g.offset + j] = k ? 1 : 0)));
  layout.depthGates.forEach((d, i) => (archVector[d.vectorIndex] = hard.depth[i] ? 1 : 0));
  const subBlocks = layout.subBlocks.map((sb): PrunedSubBlock => {
    const dropped = sb.depthIndex !== null && !hard.depth[sb.depthIndex];
    const keptOf = (gi: number): boolean[] => {
      const kept = hard.width[gi]!;
      if (!dropped && !kept.some(Boolean)) {
        const g = layout.widthGates[gi]!;
        throw new InputError('a kept sub-block would lose every element of a width gate (non-zero rule violated)', {
          code: 'E_ARCH_EMPTY_GATE',
          field: g.name,
          expected: `>= 1 entry >= 0.5 in [${g.offset}, ${g.end})`,
          found: 'all < 0.5',
        });
      }
      return kept;
    };
    if (sb.kind === 'resnet') {
      const r = sb.resnet!;
      const gi = sb.gates[0]!;
      const per = layout.widthGates[gi]!.channelsPerUnit;
      const kept = keptOf(gi);
      return {
        kind: 'resnet',
        name: sb.name,
        dropped,
        inChannels: r.inChannels,
        outChannels: r.outChannels,
        hasConvShortcut: r.inChannels !== r.outChannels,
        channelsPerGroup: per,
        timeScaleShift: r.timeScaleShift,
        keptGroups: kept.flatMap((k, g) => (k ? [g] : [])),
        keptChannels: expand(kept, per),
      };
    }
    const t = sb.transformer!;
    const byKind = (kind: string) => sb.gates.find((gi) => layout.widthGates[gi]!.kind === kind);
    const heads = (gi: number) => keptOf(gi).flatMap((k, h) => (k ? [h] : []));
    const ffGate = byKind('ffGroups');
    return {
      kind: 'transformer',
      name: sb.name,
      dropped,
      channels: t.channels,
      headDim: t.headDim,
      attn1Heads: heads(byKind('selfAttnHeads')!),
      attn2Heads: heads(byKind('crossAttnHeads')!),
      ffUnits: ffGate === undefined ? range(4 * t.channels) : expand(keptOf(ffGate), layout.widthGates[ffGate]!.channelsPerUnit),
    };
  });
  return { layout, archVector, subBlocks };
}

/** How one weight tensor is pruned: removed, kept as is, or sliced along one axis. */
export type TensorRule = { op: 'remove' } | { op: 'keep' } | { op: 'slice'; axis: number; indices: number[]; fullSize: number };

const SUB_BLOCK_KEY = /^((?:down_blocks|up_blocks)\.\d+|mid_block)\.(resnets|attentions)\.(\d+)\./;

function headChannels(heads: number[], d: number): number[] {
  return heads.flatMap((h) => range(d).map((c) => h * d + c));
}

/** The rule for one diffusers weight key under a plan. */
export function tensorRule(plan: PrunedArchitecture, key: string, index = subBlockIndex(plan)): TensorRule {
  const m = SUB_BLOCK_KEY.exec(key);
  if (!m) return { op: 'keep' };
  const sb = index.get(`${m[1]}.${m[2]}.${m[3]}`);
  if (!sb) return { op: 'keep' };
  if (sb.dropped) return { op: 'remove' };
  const suffix = key.slice(sb.name.length + 1);
  if (sb.kind === 'resnet') {
    const rows = { op: 'slice' as const, axis: 0, indices: sb.keptChannels, fullSize: sb.outChannels };
    if (/^(conv1|norm2)\.(weight|bias)$/.test(suffix)) return rows;
    if (/^time_emb_proj\.(weight|bias)$/.test(suffix)) {
      if (!sb.timeScaleShift) return rows;
      // scale_shift: rows [scale (C); shift (C)], keep the kept channels of both halves
      return { ...rows, indices: [...sb.keptChannels, ...sb.keptChannels.map((c) => c + sb.outChannels)], fullSize: 2 * sb.outChannels };
    }
    if (suffix === 'conv2.weight') return { ...rows, axis: 1 };
    return { op: 'keep' };
  }
  const attn = /^transformer_blocks\.0\.(attn[12])\.(to_q|to_k|to_v|to_out\.0)\.(weight|bias)$/.exec(suffix);
  if (attn) {
    const heads = attn[1] === 'attn1' ? sb.attn1Heads : sb.attn2Heads;
    const rule = { op: 'slice' as const, axis: 0, indices: headChannels(heads, sb.headDim), fullSize: sb.channels };
    if (attn[2] !== 'to_out.0') return rule;
    return attn[3] === 'weight' ? { ...rule, axis: 1 } : { op: 'keep' };
  }
  const inner = 4 * sb.channels;
  if (/^transformer_blocks\.0\.ff\.net\.0\.proj\.(weight|bias)$/.test(suffix)) {
    return { op: 'slice', axis: 0, indices: [...sb.ffUnits, ...sb.ffUnits.map((u) => inner + u)], fullSize: 2 * inner };
  }
  if (suffix === 'transformer_blocks.0.ff.net.2.weight') return { op: 'slice', axis: 1, indices: sb.ffUnits, fullSize: inner };
  return { op: 'keep' };
}

/** Map from sub-block module path to its plan entry (cache it when pruning many keys). */
export function subBlockIndex(plan: PrunedArchitecture): Map<string, PrunedSubBlock> {
  return new Map(plan.subBlocks.map((sb) => [sb.name, sb]));
}

/** Shape of a tensor after pruning, or null when it is removed. */
export function prunedShape(rule: TensorRule, key: string, shape: readonly number[], file = '<weights>'): number[] | null {
  if (rule.op === 'remove') return null;
  if (rule.op === 'keep') return [...shape];
  if (shape[rule.axis] !== rule.fullSize) {
    throw new ShapeError('cannot prune: tensor does not have the full (unpruned) size on the pruned axis', {
      code: 'E_SHAPE',
      file,
      field: key,
      expected: `size ${rule.fullSize} on axis ${rule.axis}`,
      found: `[${shape.join(',')}]`,
    });
  }
  const out = [...shape];
  out[rule.axis] = rule.indices.length;
  return out;
}

/** Copies `indices` along `axis` of a row-major host tensor (float32). */
export function sliceAxis(t: HostTensor, axis: number, indices: readonly number[]): HostTensor {
  const shape = t.shape;
  const n = shape[axis]!;
  const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const src = t.data instanceof Float32Array ? t.data : Float32Array.from(t.data as ArrayLike<number>);
  const out = new Float32Array(outer * indices.length * inner);
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < indices.length; j++) {
      const from = (o * n + indices[j]!) * inner;
      out.set(src.subarray(from, from + inner), (o * indices.length + j) * inner);
    }
  }
  const outShape = [...shape];
  outShape[axis] = indices.length;
  return { dtype: 'float32', shape: outShape, data: out };
}

/** Prunes one tensor (null when removed). */
export function pruneTensor(plan: PrunedArchitecture, key: string, t: HostTensor, index = subBlockIndex(plan), file?: string): HostTensor | null {
  const rule = tensorRule(plan, key, index);
  const shape = prunedShape(rule, key, t.shape, file);
  if (shape === null || rule.op === 'remove') return null;
  if (rule.op === 'keep' || rule.indices.length === rule.fullSize) return t;
  return sliceAxis(t, rule.axis, rule.indices);
}

/** Prunes a whole state dict held in memory. Removed tensors are absent from the result. */
export function pruneWeights(plan: PrunedArchitecture, weights: ReadonlyMap<string, HostTensor>, file?: string): Map<string, HostTensor> {
  const index = subBlockIndex(plan);
  const out = new Map<string, HostTensor>();
  for (const [key, t] of weights) {
    const p = pruneTensor(plan, key, t, index, file);
    if (p) out.set(key, p);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Per-module counts and the expert folder.

/** Per-module counts of an expert (what a loader needs to build it), as written into `config.json`. */
export type PrunedModuleCounts =
  | { dropped: true }
  | { conv1_out_channels: number; norm2_groups: number }
  | { attn1_heads: number; attn2_heads: number; ff_inner_units: number };

export function moduleCounts(plan: PrunedArchitecture): Record<string, PrunedModuleCounts> {
  const out: Record<string, PrunedModuleCounts> = {};
  for (const sb of plan.subBlocks) {
    if (sb.dropped) out[sb.name] = { dropped: true };
    else if (sb.kind === 'resnet') out[sb.name] = { conv1_out_channels: sb.keptChannels.length, norm2_groups: sb.keptGroups.length };
    else out[sb.name] = { attn1_heads: sb.attn1Heads.length, attn2_heads: sb.attn2Heads.length, ff_inner_units: sb.ffUnits.length };
  }
  return out;
}

const countsSchema = z.union([
  z.strictObject({ dropped: z.literal(true) }),
  z.strictObject({ conv1_out_channels: z.number().int().positive(), norm2_groups: z.number().int().positive() }),
  z.strictObject({ attn1_heads: z.number().int().positive(), attn2_heads: z.number().int().positive(), ff_inner_units: z.number().int().positive() }),
]);

/** The `_aptp_pruned` entry of an expert's `config.json` (ignored by the plain config parser: `_` key). */
const prunedEntrySchema = z.strictObject({
  format: z.literal(1).describe('expert folder format version'),
  /** Block types and FF gating of the gated model the architecture vector refers to (APTP.md §3). */
  base: z.strictObject({
    down_block_types: z.array(z.string()),
    mid_block_type: z.string(),
    up_block_types: z.array(z.string()),
    gated_ff: z.boolean(),
    ff_gate_width: z.number().int().positive(),
  }),
  vector_length: z.number().int().nonnegative(),
  arch_vector_file: z.literal('arch_vector.safetensors'),
  parameters: z.number().int().nonnegative(),
  modules: z.record(z.string(), countsSchema),
});

export type PrunedConfigEntry = z.infer<typeof prunedEntrySchema>;

const GATED_SUFFIX = /(HalfGated|WidthGated|Gated)$/;

/**
 * The expert's `config.json`: the base diffusers config with **plain** block types (the expert has no gates) and no
 * `gated_ff` / `ff_gate_width`, plus `_aptp_pruned` (see {@link PrunedConfigEntry}).
 */
export function prunedConfigJson(baseJson: Record<string, unknown>, baseConfig: UNetConfig, plan: PrunedArchitecture, parameters: number): Record<string, unknown> {
  const plain: Record<string, unknown> = { ...baseJson };
  const strip = (t: unknown) => (typeof t === 'string' ? t.replace(GATED_SUFFIX, '') : t);
  const downTypes = (baseJson.down_block_types as string[] | undefined) ?? baseConfig.downBlockTypes;
  const upTypes = (baseJson.up_block_types as string[] | undefined) ?? baseConfig.upBlockTypes;
  const midType = (baseJson.mid_block_type as string | undefined) ?? baseConfig.midBlockType;
  plain._class_name = 'UNet2DConditionModel';
  plain.down_block_types = downTypes.map(strip);
  plain.up_block_types = upTypes.map(strip);
  plain.mid_block_type = strip(midType);
  delete plain.gated_ff;
  delete plain.ff_gate_width;
  const entry: PrunedConfigEntry = {
    format: 1,
    base: { down_block_types: [...downTypes], mid_block_type: midType, up_block_types: [...upTypes], gated_ff: baseConfig.gatedFf, ff_gate_width: baseConfig.ffGateWidth },
    vector_length: plan.layout.vectorLength,
    arch_vector_file: 'arch_vector.safetensors',
    parameters,
    modules: moduleCounts(plan),
  };
  plain._aptp_pruned = entry;
  return plain;
}

function readJsonFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new InputError('cannot read file', { code: 'E_FILE_MISSING', file, cause: err });
  }
  try {
    const v = JSON.parse(text) as unknown;
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not an object');
    return v as Record<string, unknown>;
  } catch (err) {
    throw new InputError('not a JSON object', { code: 'E_JSON', file, cause: err });
  }
}

const CONFIG = 'config.json';
const WEIGHTS = 'diffusion_pytorch_model.safetensors';
const ARCH = 'arch_vector.safetensors';

export interface PruneFolderOptions {
  /** Called after each tensor with (done, total). */
  onProgress?: (done: number, total: number) => void;
  /** Storage dtype of the expert's weights (default F32; F16 halves the folder, e.g. for an fp16 base). */
  dtype?: 'F32' | 'F16';
}

export interface PruneResult {
  plan: PrunedArchitecture;
  parametersFull: number;
  parametersPruned: number;
  removedTensors: string[];
}

/**
 * Loads a (gated or plain) diffusers UNet folder, slices its **pretrained** weights for one architecture vector and
 * writes the expert folder `outDir`. `archVector` is one row of length L (the layout of `aptpLayout(config)`).
 */
export function pruneUNetFolder(srcDir: string, archVector: ArrayLike<number>, outDir: string, options: PruneFolderOptions = {}): PruneResult {
  const configFile = path.join(srcDir, CONFIG);
  const json = readJsonFile(configFile);
  const cfg = parseUNetConfig(json, configFile);
  const layout = aptpLayout(cfg);
  const plan = prunedArchitecture(layout, archVector);
  const weightsFile = path.join(srcDir, WEIGHTS);
  if (!fs.existsSync(weightsFile)) {
    throw new InputError('missing weights file', { code: 'E_FILE_MISSING', file: weightsFile, expected: `${srcDir}/{${CONFIG},${WEIGHTS}}` });
  }
  const reader = new SafetensorsReader(weightsFile);
  const index = subBlockIndex(plan);
  const out: Record<string, HostTensor> = {};
  const removedTensors: string[] = [];
  let parametersFull = 0;
  let parametersPruned = 0;
  try {
    const keys = reader.keys();
    keys.forEach((key, i) => {
      const t = reader.read(key);
      parametersFull += t.data.length;
      const p = pruneTensor(plan, key, t, index, weightsFile);
      if (p) {
        out[key] = p;
        parametersPruned += p.data.length;
      } else removedTensors.push(key);
      options.onProgress?.(i + 1, keys.length);
    });
  } finally {
    reader.close();
  }
  writePrunedUNet(outDir, { baseJson: json, baseConfig: cfg, plan, weights: out, parameters: parametersPruned, dtype: options.dtype });
  return { plan, parametersFull, parametersPruned, removedTensors: removedTensors.sort() };
}

/** Writes an expert folder from already-pruned weights. */
export function writePrunedUNet(
  outDir: string,
  args: { baseJson: Record<string, unknown>; baseConfig: UNetConfig; plan: PrunedArchitecture; weights: Record<string, HostTensor>; parameters?: number; dtype?: 'F32' | 'F16' },
): void {
  const parameters = args.parameters ?? Object.values(args.weights).reduce((a, t) => a + t.data.length, 0);
  fs.mkdirSync(outDir, { recursive: true });
  writeSafetensors(path.join(outDir, WEIGHTS), args.weights, { dtype: args.dtype ?? 'F32' });
  writeSafetensors(path.join(outDir, ARCH), { arch_vector: { dtype: 'float32', shape: [1, args.plan.layout.vectorLength], data: args.plan.archVector } });
  // config.json last: a folder with a config is complete.
  writeJsonAtomic(path.join(outDir, CONFIG), prunedConfigJson(args.baseJson, args.baseConfig, args.plan, parameters));
}

export interface PrunedUNetFolder {
  /** The expert's own (plain) config: what `loadUNet` builds, with widths read from the weights. */
  config: UNetConfig;
  /** The gated config the architecture vector refers to. */
  baseConfig: UNetConfig;
  plan: PrunedArchitecture;
  entry: PrunedConfigEntry;
  weightsFile: string;
}

/**
 * Reads an expert folder's config and architecture vector, rebuilds the plan and checks it against the per-module
 * counts in `config.json` (a `ConfigError` names the first disagreeing module). Weights are left to the loader.
 */
export function readPrunedUNet(dir: string): PrunedUNetFolder {
  const configFile = path.join(dir, CONFIG);
  const json = readJsonFile(configFile);
  const parsedEntry = prunedEntrySchema.safeParse(json._aptp_pruned);
  if (!parsedEntry.success) {
    const issue = parsedEntry.error.issues[0]!;
    throw new ConfigError('not an APTP expert config', { code: 'E_CONFIG', file: configFile, field: ['_aptp_pruned', ...issue.path.map(String)].join('.'), expected: issue.message });
  }
  const entry = parsedEntry.data;
  const config = parseUNetConfig(json, configFile);
  const baseConfig = parseUNetConfig({ ...json, ...entry.base }, `${configFile}: _aptp_pruned.base`);
  const layout = aptpLayout(baseConfig);
  if (layout.vectorLength !== entry.vector_length) {
    throw new ConfigError('vector length does not match the base config', { code: 'E_CONFIG', file: configFile, field: '_aptp_pruned.vector_length', expected: layout.vectorLength, found: entry.vector_length });
  }
  const archFile = path.join(dir, ARCH);
  const arch = readSafetensors(archFile, ['arch_vector']).get('arch_vector')!;
  if (arch.data.length !== layout.vectorLength) {
    throw new ShapeError('wrong architecture vector length', { code: 'E_SHAPE', file: archFile, field: 'arch_vector', expected: `[1, ${layout.vectorLength}]`, found: arch.shape });
  }
  const plan = prunedArchitecture(layout, arch.data as Float32Array);
  const counts = moduleCounts(plan);
  for (const sb of layout.subBlocks) {
    if (JSON.stringify(counts[sb.name]) !== JSON.stringify(entry.modules[sb.name])) {
      throw new ConfigError('module counts disagree with arch_vector.safetensors', { code: 'E_CONFIG', file: configFile, field: `_aptp_pruned.modules.${sb.name}`, expected: counts[sb.name], found: entry.modules[sb.name] ?? 'missing' });
    }
  }
  return { config, baseConfig, plan, entry, weightsFile: path.join(dir, WEIGHTS) };
}
