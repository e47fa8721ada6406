import * as tf from '@tensorflow/tfjs-core';
import { ShapeError } from '@aptp/core';
import type { ArchitectureLayout } from './layout';

/**
 * Architecture vectors `[B, L]` (APTP.md §2.4, §3.3): splitting into per-module gates, hard thresholds and the
 * straight-through estimator. All tensor functions are differentiable; their gradients are explicit `tf.customGrad`s
 * built from forward kernels only (pad, reshape, sum), so they work on wasm and do not depend on tfjs's registered
 * gradient table. The caller owns the results.
 */

type UnaryGradFn = (x: tf.Tensor, save: tf.GradSaveFunc) => { value: tf.Tensor; gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.Tensor };

/** `tf.customGrad` for a one-input function, typed (tfjs types the inputs as `Tensor | GradSaveFunc`). */
export function customGradUnary(fn: UnaryGradFn): (x: tf.Tensor) => tf.Tensor {
  const f = tf.customGrad(((...args: Array<tf.Tensor | tf.GradSaveFunc>) => fn(args[0] as tf.Tensor, args[1] as tf.GradSaveFunc)) as Parameters<typeof tf.customGrad>[0]);
  return (x: tf.Tensor) => f(x);
}

/** Columns `[offset, offset + width)` of `[B, L]`; gradient = dy zero-padded back to `[B, L]`. */
function sliceColumns(vector: tf.Tensor2D, offset: number, width: number): tf.Tensor2D {
  const total = vector.shape[1];
  const f = customGradUnary((x: tf.Tensor) => ({
    value: tf.slice(x, [0, offset], [-1, width]),
    gradFunc: (dy: tf.Tensor) => tf.pad(dy, [[0, 0], [offset, total - offset - width]]),
  }));
  return f(vector) as tf.Tensor2D;
}

/** Column `index` of `[B, L]` as `[B]`. */
function column(vector: tf.Tensor2D, index: number): tf.Tensor1D {
  const total = vector.shape[1];
  const f = customGradUnary((x: tf.Tensor) => ({
    value: tf.reshape(tf.slice(x, [0, index], [-1, 1]), [-1]),
    gradFunc: (dy: tf.Tensor) => tf.pad(tf.reshape(dy, [-1, 1]), [[0, 0], [index, total - index - 1]]),
  }));
  return f(vector) as tf.Tensor1D;
}

/** hard(v) = 1 if v ≥ 0.5 else 0 (the reference threshold; 0.5 itself counts as kept). */
export const HARD_THRESHOLD = 0.5;

/** The gates of one sub-block, named as in STYLE.md (`resnetGate`, `selfAttnHeadGate`, …). */
export interface SubBlockGates {
  /** `[B, groups]` ResNet width gate (norm2 groups). */
  resnetGate?: tf.Tensor2D;
  /** `[B, heads]` self-attention (attn1) head gate. */
  selfAttnHeadGate?: tf.Tensor2D;
  /** `[B, heads]` cross-attention (attn2) head gate. */
  crossAttnHeadGate?: tf.Tensor2D;
  /** `[B, ffGateWidth]` feed-forward (GEGLU) group gate. */
  ffGate?: tf.Tensor2D;
  /** `[B]` depth gate. */
  depthGate?: tf.Tensor1D;
}

/** Throws a ShapeError unless `vector` is `[B, L]` with the layout's L. */
export function checkArchVector(layout: ArchitectureLayout, vector: tf.Tensor, field = 'archVector'): void {
  if (vector.rank !== 2 || vector.shape[1] !== layout.vectorLength) {
    throw new ShapeError('architecture vector has the wrong shape', { code: 'E_SHAPE', field, expected: `[B, ${layout.vectorLength}]`, found: vector.shape });
  }
}

const KEY = { resnetGroups: 'resnetGate', selfAttnHeads: 'selfAttnHeadGate', crossAttnHeads: 'crossAttnHeadGate', ffGroups: 'ffGate' } as const;

/**
 * Splits `[B, L]` into named per-sub-block gates, keyed by sub-block module path (`down_blocks.0.resnets.1`, …).
 * Differentiable (slices). The caller owns every returned tensor (`disposeGates`).
 */
export function splitArchVector(layout: ArchitectureLayout, vector: tf.Tensor2D): Record<string, SubBlockGates> {
  checkArchVector(layout, vector);
  const out: Record<string, SubBlockGates> = {};
  for (const sb of layout.subBlocks) {
    const g: SubBlockGates = {};
    for (const gi of sb.gates) {
      const wg = layout.widthGates[gi]!;
      g[KEY[wg.kind]] = sliceColumns(vector, wg.offset, wg.width);
    }
    if (sb.depthVectorIndex !== null) g.depthGate = column(vector, sb.depthVectorIndex);
    out[sb.name] = g;
  }
  return out;
}

/** Disposes every tensor returned by {@link splitArchVector}. */
export function disposeGates(gates: Record<string, SubBlockGates>): void {
  for (const g of Object.values(gates)) tf.dispose(Object.values(g) as tf.Tensor[]);
}

/** `hard(x)` as float32 0/1 values; zero gradient (the threshold is flat), usable inside `tf.grad`. */
export function hardGates<T extends tf.Tensor>(x: T): T {
  const f = customGradUnary((input: tf.Tensor) => ({
    value: tf.cast(tf.greaterEqual(input, HARD_THRESHOLD), 'float32'),
    gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy),
  }));
  return f(x) as T;
}

/**
 * Straight-through hard gates (APTP.md §2.4): value `hard(x)`, gradient of the identity
 * (the reference's `(hard − s).detach() + s`).
 */
export function hardStraightThrough<T extends tf.Tensor>(x: T): T {
  const f = customGradUnary((input: tf.Tensor) => ({
    value: tf.cast(tf.greaterEqual(input, HARD_THRESHOLD), 'float32'),
    gradFunc: (dy: tf.Tensor) => tf.clone(dy),
  }));
  return f(x) as T;
}

/**
 * Repeats each of the `w` gate values `unitsPerGate` times along the last axis: `[B, w]` → `[B, w·unitsPerGate]`
 * (contiguous groups: channel c is gated by element ⌊c / unitsPerGate⌋). Differentiable (broadcast multiply).
 */
export function expandGate(gate: tf.Tensor2D, unitsPerGate: number): tf.Tensor2D {
  const [b, w] = gate.shape;
  const f = customGradUnary((g: tf.Tensor) => ({
    value: tf.reshape(tf.mul(tf.reshape(g, [b, w, 1]), tf.ones([1, 1, unitsPerGate])), [b, w * unitsPerGate]),
    gradFunc: (dy: tf.Tensor) => tf.sum(tf.reshape(dy, [b, w, unitsPerGate]), 2),
  }));
  return f(gate) as tf.Tensor2D;
}

/** `[B, L]` all-ones architecture vector (every gate open: the plain UNet, the distillation teacher). */
export function onesArchVector(layout: ArchitectureLayout, batch = 1): tf.Tensor2D {
  return tf.ones([batch, layout.vectorLength]) as tf.Tensor2D;
}

/** Hard 0/1 decisions of one architecture-vector row, per gate (host side; used by pruning and reports). */
export interface HardArchitecture {
  /** Per width gate (layout order): one boolean per element, true = kept. */
  width: boolean[][];
  /** Per depth gate: true = sub-block kept. */
  depth: boolean[];
}

/** Thresholds one row (length L) of an architecture vector at 0.5. */
export function hardArchitecture(layout: ArchitectureLayout, row: ArrayLike<number>): HardArchitecture {
  if (row.length !== layout.vectorLength) {
    throw new ShapeError('architecture vector has the wrong length', { code: 'E_SHAPE', field: 'archVector', expected: layout.vectorLength, found: row.length });
  }
  return {
    width: layout.widthGates.map((g) => Array.from({ length: g.width }, (_, k) => row[g.offset + k]! >= HARD_THRESHOLD)),
    depth: layout.depthGates.map((d) => row[d.vectorIndex]! >= HARD_THRESHOLD),
  };
}

/** Fraction of kept width entries and the number of kept depth gates of one row (for logs and reports). */
export function keptFraction(layout: ArchitectureLayout, row: ArrayLike<number>): { width: number; depthKept: number } {
  const h = hardArchitecture(layout, row);
  const kept = h.width.reduce((a, g) => a + g.filter(Boolean).length, 0);
  return { width: layout.widthEntries ? kept / layout.widthEntries : 1, depthKept: h.depth.filter(Boolean).length };
}
