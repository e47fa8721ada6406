import type { Ops } from '@aptp/core';

/**
 * Where APTP gates multiply (APTP.md §3.2, golden/aptp/README.md §4.1). The block files call these helpers at the
 * exact point of the reference; absent gates emit nothing (a plain or pruned UNet runs the same block code).
 */

/**
 * Placement of the ResNet width gate:
 * - `reference` (default): on `conv1(…) + time_emb_proj(…)`, **before** `norm2` (the reference; a group gated to 0
 *   still feeds `silu(norm2.bias)` into conv2, so hard gates ≠ the pruned expert, golden README §9.3);
 * - `consistent`: on `silu(norm2(h))`, right before `conv2`, so a hard-gated network equals the physically pruned
 *   expert (GroupNorm normalises each group independently; a gated-off group contributes exactly 0 to conv2).
 */
export type GatePlacement = 'reference' | 'consistent';

/** Gates of one sub-block (names as `gates/vector.ts` `SubBlockGates`), for any `Ops` tensor type. */
export interface BlockGates<T> {
  /** `[B, groups]` ResNet width gate (norm2 groups). */
  resnetGate?: T;
  /** `[B, heads]` self-attention head gate. */
  selfAttnHeadGate?: T;
  /** `[B, heads]` cross-attention head gate. */
  crossAttnHeadGate?: T;
  /** `[B, ffGateWidth]` GEGLU unit-group gate. */
  ffGate?: T;
  /** `[B]` depth gate. */
  depthGate?: T;
}

/** Multiplies channel group k (`groupSize` contiguous channels) of a feature map by `gate[:, k]`. */
export function gateChannelGroups<T>(o: Ops<T>, h: T, gate: T | undefined, groupSize: number): T {
  return gate === undefined ? h : o.scaleChannels(h, o.expandGroups(gate, groupSize));
}

/** Multiplies head j (channels `j·d … j·d+d−1` of tokens `[B, S, h·d]`) by `gate[:, j]`; used on q, k and v. */
export function gateHeads<T>(o: Ops<T>, x: T, gate: T | undefined, headDim: number): T {
  return gate === undefined ? x : o.scaleChannels(x, o.expandGroups(gate, headDim));
}

/** Multiplies GEGLU unit group g (`unitsPerGroup` units of one half) by `gate[:, g]`; used on both halves. */
export function gateFfUnits<T>(o: Ops<T>, x: T, gate: T | undefined, unitsPerGroup: number): T {
  return gate === undefined ? x : o.scaleChannels(x, o.expandGroups(gate, unitsPerGroup));
}

/** Depth gate: `(1 − d)·xIn + d·f(x)`; without a gate just `f(x)`. */
export function applyDepth<T>(o: Ops<T>, xIn: T, fx: T, depth: T | undefined): T {
  return depth === undefined ? fx : o.blend(xIn, fx, depth);
}
