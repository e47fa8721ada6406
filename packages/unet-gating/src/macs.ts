import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, InputError } from '@aptp/core';
import { unetStructure } from './config';
import type { ResnetSpec, TransformerSpec, UNetConfig } from './config';
import { aptpLayout } from './gates/layout';
import type { ArchitectureLayout } from './gates/layout';
import { checkArchVector, customGradUnary, hardArchitecture, hardGates, HARD_THRESHOLD } from './gates/vector';

/**
 * The APTP resource (MACs) model, APTP.md §4 and golden/aptp/README.md §5: multiply-accumulates of one UNet call
 * (batch 1) counted the way the reference's hook-based counter does, per prunable sub-block and for the fixed parts,
 * then the current MACs of architecture vectors.
 *
 * Counting rules (reproduced with their quirks):
 * - Conv k×k: k²·C_in·C_out·H_out·W_out + C_out·H_out·W_out. Linear on N rows: N·in·out + out (bias counted once).
 *   GroupNorm: 2·numel; LayerNorm: numel; nearest upsampling and GELU: 0.
 * - Attention: to_q + to_k + to_v + to_out.0 (cross-attention k/v on the text tokens) plus the core
 *   heads·(N²·d + N² + N²·d) with **N = query tokens for the keys too** (cross-attention counted as if it had N keys).
 * - One SiLU instance is shared by the whole network; its counter holds 2 × every element passed through any SiLU
 *   (three per ResNet, the time embedding's, the output one) and is added to the total **twice**
 *   (as `time_embedding.act` and as `conv_act`).
 * - ResNet: prunable P = conv1 + time_emb_proj + norm2 + conv2; total T = P + norm1 + conv_shortcut. With
 *   `scale_shift` time_emb_proj has 2·C_out outputs (its elementwise scale and shift, like every add, count 0).
 *   Transformer: P = attn1 + attn2 + ff (per gate); T = P + norm + proj_in + proj_out + norm1..3.
 * - Current MACs (§5.2), ρ_g = kept fraction of gate g (hard, ≥ 0.5), δ = hard depth gate:
 *   width-only sub-block Σ_g ρ_g·P_g; depth-gated (Σ_g ρ_g·P_g + T − P)·δ.
 *   D = Σ_width-only P + Σ_depth-gated T (the current prunable MACs of the all-ones vector).
 * The reported SD 2.1 figure (1384.2 G) is this total at 768 px (96×96 latent) with a **1-token** text input;
 * training uses 256 px (32×32) and 77 tokens.
 */

export interface MacsInput {
  /** Latent height and width (image size / 8 for SD). */
  latentHeight: number;
  latentWidth: number;
  /** Text tokens of the cross-attention context (77 in training, 1 for the reference's reported figures). */
  textTokens: number;
}

export interface SubBlockMacs {
  name: string;
  kind: 'resnet' | 'transformer';
  hasDepthGate: boolean;
  /** T */
  totalMacs: number;
  /** P = Σ gatePrunableMacs */
  prunableMacs: number;
  /** P_g per width gate of the sub-block, in vector order. */
  gatePrunableMacs: number[];
  /** Every counted module (the reference's names: `conv1`, `attn1.to_q`, `attn1.total`, `ff.net.0.proj`, …). */
  moduleMacs: Record<string, number>;
}

export interface MacsModel {
  layout: ArchitectureLayout;
  input: MacsInput;
  /** The prunable sub-blocks, in layout order. */
  subBlocks: SubBlockMacs[];
  /** Never-prunable modules (time embedding, conv_in, samplers, conv_norm_out, shared SiLU ×2, conv_out, and any
   * ResNet/transformer of an ungated block under its module path). */
  fixedParts: Record<string, number>;
  /** The shared SiLU's counter: 2 × `elements` over `calls` calls in one forward. */
  sharedSilu: { macs: number; calls: number; elements: number };
  /** Σ T + Σ fixed (the reference's `calc_macs()['total_macs']`). */
  totalMacs: number;
  /** Σ P. */
  prunableMacs: number;
  /** D: current prunable MACs of the all-ones architecture. */
  fullPrunableMacs: number;
  sumSubBlockTotal: number;
  sumFixedParts: number;
}

const conv = (k: number, cin: number, cout: number, hw: number): number => k * k * cin * cout * hw + cout * hw;
const linear = (rows: number, din: number, dout: number, bias = true): number => rows * din * dout + (bias ? dout : 0);

function resnetMacs(r: ResnetSpec, hw: number, tembDim: number): Record<string, number> {
  const m: Record<string, number> = {
    norm1: 2 * r.inChannels * hw,
    conv1: conv(3, r.inChannels, r.outChannels, hw),
    time_emb_proj: linear(1, tembDim, (r.timeScaleShift ? 2 : 1) * r.outChannels),
    norm2: 2 * r.outChannels * hw,
    conv2: conv(3, r.outChannels, r.outChannels, hw),
  };
  if (r.inChannels !== r.outChannels) m.conv_shortcut = conv(1, r.inChannels, r.outChannels, hw);
  return m;
}

function attentionMacs(prefix: string, n: number, c: number, heads: number, kvRows: number, kvDim: number): Record<string, number> {
  const d = c / heads;
  const parts = {
    to_q: linear(n, c, c, false),
    to_k: linear(kvRows, kvDim, c, false),
    to_v: linear(kvRows, kvDim, c, false),
    'to_out.0': linear(n, c, c),
  };
  const core = heads * (n * n * d + n * n + n * n * d);
  const total = parts.to_q + parts.to_k + parts.to_v + parts['to_out.0'] + core;
  return { [`${prefix}.total`]: total, ...Object.fromEntries(Object.entries(parts).map(([k, v]) => [`${prefix}.${k}`, v])) };
}

function transformerMacs(cfg: UNetConfig, t: TransformerSpec, hw: number, textTokens: number): Record<string, number> {
  const c = t.channels;
  const proj = cfg.useLinearProjection ? linear(hw, c, c) : conv(1, c, c, hw);
  return {
    norm: 2 * c * hw,
    proj_in: proj,
    proj_out: proj,
    'transformer_blocks.0.norm1': hw * c,
    'transformer_blocks.0.norm2': hw * c,
    'transformer_blocks.0.norm3': hw * c,
    ...attentionMacs('attn1', hw, c, t.heads, hw, c),
    ...attentionMacs('attn2', hw, c, t.heads, textTokens, cfg.crossAttentionDim),
    'ff.net.0.proj': linear(hw, c, 8 * c),
    'ff.net.2': linear(hw, 4 * c, c),
    'ff.total': linear(hw, c, 8 * c) + linear(hw, 4 * c, c),
  };
}

function sumValues(m: Record<string, number>, skip: (k: string) => boolean = () => false): number {
  return Object.entries(m).reduce((a, [k, v]) => (skip(k) ? a : a + v), 0);
}

function checkInput(input: MacsInput): void {
  for (const [field, v] of Object.entries(input)) {
    if (!Number.isInteger(v) || v < 1) throw new InputError('MACs input sizes must be positive integers', { code: 'E_INPUT', field, expected: 'integer >= 1', found: v });
  }
}

/**
 * Builds the MACs model of a (gated) UNet config at one latent size and text length.
 * @param layout defaults to `aptpLayout(cfg)` (a plain config is gated the APTP way)
 */
export function macsModel(cfg: UNetConfig, input: MacsInput, layout: ArchitectureLayout = aptpLayout(cfg)): MacsModel {
  checkInput(input);
  const s = unetStructure(cfg);
  const n = cfg.blockOutChannels.length;
  // Spatial size per level: conv_in keeps H×W; a 3×3 stride-2 pad-1 downsampler gives ceil(H/2).
  const levels: Array<[number, number]> = [[input.latentHeight, input.latentWidth]];
  for (let i = 1; i < n; i++) levels.push([Math.ceil(levels[i - 1]![0] / 2), Math.ceil(levels[i - 1]![1] / 2)]);
  const area = (level: number) => levels[level]![0] * levels[level]![1];
  const T = cfg.timeEmbedDim;
  const c0 = cfg.blockOutChannels[0]!;

  const perModule = new Map<string, { kind: 'resnet' | 'transformer'; macs: Record<string, number>; total: number }>();
  let siluElements = 0;
  let siluCalls = 0;
  for (const b of s.blocks) {
    const level = b.kind === 'down' ? b.index : b.kind === 'mid' ? n - 1 : n - 1 - b.index;
    const hw = area(level);
    for (const r of b.resnets) {
      const m = resnetMacs(r, hw, T);
      perModule.set(r.name, { kind: 'resnet', macs: m, total: sumValues(m) });
      siluElements += r.inChannels * hw + T + r.outChannels * hw;
      siluCalls += 3;
    }
    for (const t of b.attentions) {
      const m = transformerMacs(cfg, t, hw, input.textTokens);
      const oneBlock = sumValues(m, (key) => !/^(transformer_blocks\.0\.|(attn[12]|ff)\.total$)/.test(key));
      // Gated transformers have exactly one block (layout.ts); ungated ones (fixed parts) may have more.
      const total = sumValues(m, (key) => /^(attn[12]|ff)\./.test(key) && !key.endsWith('.total')) + (t.layers - 1) * oneBlock;
      perModule.set(t.name, { kind: 'transformer', macs: m, total });
    }
  }
  siluElements += T + c0 * area(0);
  siluCalls += 2;
  const silu = 2 * siluElements;

  const fixedParts: Record<string, number> = {
    'time_embedding.linear_1': linear(1, c0, T),
    'time_embedding.act': silu,
    'time_embedding.linear_2': linear(1, T, T),
    ...textTimeEmbeddingMacs(cfg, input.textTokens),
    conv_in: conv(cfg.convInKernel, cfg.inChannels, c0, area(0)),
    conv_norm_out: 2 * c0 * area(0),
    conv_act: silu,
    conv_out: conv(cfg.convOutKernel, c0, cfg.outChannels, area(0)),
  };
  for (const b of s.down) if (b.resample) fixedParts[`${b.name}.downsamplers.0.conv`] = conv(3, b.outChannels, b.outChannels, area(b.index + 1));
  for (const b of s.up) if (b.resample) fixedParts[`${b.name}.upsamplers.0.conv`] = conv(3, b.outChannels, b.outChannels, area(n - 2 - b.index));

  const gated = new Set(layout.subBlocks.map((sb) => sb.name));
  for (const [name, m] of perModule) if (!gated.has(name)) fixedParts[name] = m.total;

  const subBlocks: SubBlockMacs[] = layout.subBlocks.map((sb) => {
    const m = perModule.get(sb.name);
    if (!m || m.kind !== sb.kind) {
      throw new ConfigError('layout does not belong to this config', { code: 'E_CONFIG', field: sb.name, expected: `a ${sb.kind} of the config`, found: m ? m.kind : 'missing' });
    }
    // P_g of each gate the sub-block owns (an ungated feed-forward stays in T − P).
    const prunable = sb.gates.map((gi) => {
      const kind = layout.widthGates[gi]!.kind;
      const mm = m.macs;
      if (kind === 'resnetGroups') return mm.conv1! + mm.time_emb_proj! + mm.norm2! + mm.conv2!;
      return mm[kind === 'selfAttnHeads' ? 'attn1.total' : kind === 'crossAttnHeads' ? 'attn2.total' : 'ff.total']!;
    });
    return {
      name: sb.name,
      kind: m.kind,
      hasDepthGate: sb.depthIndex !== null,
      totalMacs: m.total,
      prunableMacs: prunable.reduce((a, v) => a + v, 0),
      gatePrunableMacs: prunable,
      moduleMacs: m.macs,
    };
  });
  const sumSubBlockTotal = subBlocks.reduce((a, sb) => a + sb.totalMacs, 0);
  const sumFixedParts = sumValues(fixedParts);
  return {
    layout,
    input: { ...input },
    subBlocks,
    fixedParts,
    sharedSilu: { macs: silu, calls: siluCalls, elements: siluElements },
    totalMacs: sumSubBlockTotal + sumFixedParts,
    prunableMacs: subBlocks.reduce((a, sb) => a + sb.prunableMacs, 0),
    fullPrunableMacs: subBlocks.reduce((a, sb) => a + (sb.hasDepthGate ? sb.totalMacs : sb.prunableMacs), 0),
    sumSubBlockTotal,
    sumFixedParts,
  };
}

/**
 * `add_embedding` (`addition_embed_type: "text"`; absent from the reference, counted by the same rules): norm1 on
 * S tokens, q on the one pooled token, k/v on S + 1 tokens, the attention core heads·(N·d + N + N·d) with N = S + 1
 * keys for the single query, proj, norm2.
 */
function textTimeEmbeddingMacs(cfg: UNetConfig, textTokens: number): Record<string, number> {
  if (cfg.additionEmbedType !== 'text') return {};
  const d = cfg.crossAttentionDim;
  const heads = cfg.additionEmbedHeads;
  const n = textTokens + 1;
  return {
    'add_embedding.norm1': textTokens * d,
    'add_embedding.pool.q_proj': linear(1, d, d),
    'add_embedding.pool.k_proj': linear(n, d, d),
    'add_embedding.pool.v_proj': linear(n, d, d),
    'add_embedding.pool.attention': heads * (2 * n * (d / heads) + n),
    'add_embedding.proj': linear(1, d, cfg.timeEmbedDim),
    'add_embedding.norm2': cfg.timeEmbedDim,
  };
}

/**
 * The loss target p' = 1 − (1 − p)·T/D (APTP.md §4.3): the configured p is a fraction of the **total** MACs, the
 * resource ratio is measured on the prunable part.
 */
export function prunableTarget(p: number, model: Pick<MacsModel, 'totalMacs' | 'fullPrunableMacs'>): number {
  if (!(p > 0 && p <= 1)) throw new InputError('pruning target must be in (0, 1]', { code: 'E_INPUT', field: 'pruningTarget', expected: '(0, 1]', found: p });
  return 1 - ((1 - p) * model.totalMacs) / model.fullPrunableMacs;
}

/** Per-gate share of the prunable MACs (the reference's `prunable_macs_list`): 38 lists of P_g / ΣP, then one
 * single-element list per depth gate with the share of its sub-block. */
export function prunableMacsShares(model: MacsModel): number[][] {
  const shares = model.subBlocks.map((sb) => sb.gatePrunableMacs.map((p) => p / model.prunableMacs));
  return [...shares, ...model.layout.depthGates.map((d) => [shares[d.subBlockIndex]!.reduce((a, v) => a + v, 0)])];
}

export interface CurrentMacs {
  /** Current prunable MACs (§5.2). */
  prunableMacs: number;
  /** Current total MACs. */
  totalMacs: number;
  /** Per sub-block (layout order): current prunable and total MACs. */
  subBlocks: Array<{ name: string; prunableMacs: number; totalMacs: number }>;
}

/** Exact (float64) current MACs of one architecture-vector row (hard-thresholded at 0.5). */
export function currentMacsOf(model: MacsModel, row: ArrayLike<number>): CurrentMacs {
  const h = hardArchitecture(model.layout, row);
  let prunable = 0;
  let total = model.sumFixedParts;
  const subBlocks = model.layout.subBlocks.map((sb, i) => {
    const m = model.subBlocks[i]!;
    let width = 0;
    sb.gates.forEach((g, j) => {
      const kept = h.width[g]!.filter(Boolean).length;
      width += (kept / h.width[g]!.length) * m.gatePrunableMacs[j]!;
    });
    const fixed = m.totalMacs - m.prunableMacs;
    let cur: number;
    let curTotal: number;
    if (sb.depthIndex !== null) {
      cur = h.depth[sb.depthIndex] ? width + fixed : 0;
      curTotal = cur;
    } else {
      cur = width;
      curTotal = width + fixed;
    }
    prunable += cur;
    total += curTotal;
    return { name: sb.name, prunableMacs: cur, totalMacs: curTotal };
  });
  return { prunableMacs: prunable, totalMacs: total, subBlocks };
}

/** Host constants of the differentiable current-MACs map (see `currentPrunableMacs`). */
interface MacsMatrices {
  /** [W, S]: M[k, s] = P_g / w_g for entry k of gate g in sub-block s. */
  m: Float32Array;
  /** [S, W] = Mᵀ. */
  mt: Float32Array;
  /** [Dn, S] one-hot: depth gate → its sub-block; and its transpose [S, Dn]. */
  e: Float32Array;
  et: Float32Array;
  /** [S]: T − P for depth-gated sub-blocks, else 0. */
  c: Float32Array;
  /** [S]: 1 for sub-blocks without a depth gate, else 0. */
  nd: Float32Array;
}

const matricesCache = new WeakMap<MacsModel, MacsMatrices>();

function matrices(model: MacsModel): MacsMatrices {
  const cached = matricesCache.get(model);
  if (cached) return cached;
  const { layout } = model;
  const S = layout.subBlocks.length;
  const W = layout.widthEntries;
  const Dn = layout.depthEntries;
  const m = new Float32Array(W * S);
  const mt = new Float32Array(S * W);
  const e = new Float32Array(Dn * S);
  const et = new Float32Array(S * Dn);
  const c = new Float32Array(S);
  const nd = new Float32Array(S).fill(1);
  layout.subBlocks.forEach((sb, s) => {
    const sm = model.subBlocks[s]!;
    sb.gates.forEach((gi, j) => {
      const g = layout.widthGates[gi]!;
      const per = sm.gatePrunableMacs[j]! / g.width;
      for (let k = g.offset; k < g.end; k++) {
        m[k * S + s] = per;
        mt[s * W + k] = per;
      }
    });
    if (sb.depthIndex !== null) {
      e[sb.depthIndex * S + s] = 1;
      et[s * Dn + sb.depthIndex] = 1;
      c[s] = sm.totalMacs - sm.prunableMacs;
      nd[s] = 0;
    }
  });
  const out = { m, mt, e, et, c, nd };
  matricesCache.set(model, out);
  return out;
}

function prunableMap(model: MacsModel, gates: tf.Tensor2D, scale: number): tf.Tensor1D {
  checkArchVector(model.layout, gates, 'gates');
  const { layout } = model;
  if (layout.vectorLength === 0) throw new ConfigError('the config has no gates (use withAptpGating)', { code: 'E_CONFIG', field: 'down_block_types' });
  const S = layout.subBlocks.length;
  const W = layout.widthEntries;
  const Dn = layout.depthEntries;
  const B = gates.shape[0];
  const k = matrices(model);
  const f = customGradUnary((x: tf.Tensor, save: tf.GradSaveFunc) => {
    const h = tf.cast(tf.greaterEqual(x, HARD_THRESHOLD), 'float32');
    const widthPart = tf.matMul(tf.slice(h, [0, 0], [B, W]), tf.tensor2d(k.m, [W, S])); // [B, S]
    const base = tf.add(widthPart, tf.tensor1d(k.c)); // [B, S]
    const depthFactor = Dn > 0 ? tf.add(tf.matMul(tf.slice(h, [0, W], [B, Dn]), tf.tensor2d(k.e, [Dn, S])), tf.tensor1d(k.nd)) : tf.ones([B, S]);
    save([base, depthFactor]);
    return {
      value: tf.mul(tf.sum(tf.mul(base, depthFactor), 1), scale),
      // Straight-through (APTP.md §4.2): ∂/∂s_k = (P_g/w_g)·δ for width entries, ∂/∂δ = Σρ·P + T − P.
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sBase, sDepth] = saved as [tf.Tensor2D, tf.Tensor2D];
        const dyc = tf.mul(tf.reshape(dy, [B, 1]), scale);
        const dW = tf.matMul(tf.mul(dyc, sDepth), tf.tensor2d(k.mt, [S, W]));
        if (Dn === 0) return dW;
        const dD = tf.matMul(tf.mul(dyc, sBase), tf.tensor2d(k.et, [S, Dn]));
        return tf.concat([dW, dD], 1);
      },
    };
  });
  return f(gates) as tf.Tensor1D;
}

/**
 * Current prunable MACs `[B]` of gate vectors `[B, L]` (soft or hard; hardened at 0.5), differentiable through the
 * straight-through hard gates. The reference evaluates this in float32 too.
 */
export function currentPrunableMacs(model: MacsModel, gates: tf.Tensor2D): tf.Tensor1D {
  return prunableMap(model, gates, 1);
}

/** Resource ratios r_b = current prunable MACs / D, `[B]`, differentiable (straight-through). */
export function resourceRatios(model: MacsModel, gates: tf.Tensor2D): tf.Tensor1D {
  return prunableMap(model, gates, 1 / model.fullPrunableMacs);
}

/** Current total MACs `[B]` (ρ, δ detached: zero gradient), float32. */
export function currentTotalMacs(model: MacsModel, gates: tf.Tensor2D): tf.Tensor1D {
  const widthOnlyFixed = model.subBlocks.reduce((a, sb) => a + (sb.hasDepthGate ? 0 : sb.totalMacs - sb.prunableMacs), 0);
  return tf.tidy(() => {
    const cur = currentPrunableMacs(model, hardGates(gates));
    return tf.add(cur, model.sumFixedParts + widthOnlyFixed) as tf.Tensor1D;
  });
}
