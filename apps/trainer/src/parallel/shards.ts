import * as tf from '@tensorflow/tfjs-core';
import { ShapeError } from '@aptp/core';
import type { TeacherBatch } from '../steps/teacherStep';

/**
 * Data-parallel teacher steps (issue 7 item 1, "trains here (2 cores, wasm)"): tfjs-wasm runs on one thread in Node,
 * so the second core only helps if a second thread computes gradients. The batch of a step is cut into contiguous
 * shards of rows; each shard's loss and gradient are computed on its own thread with the same weights; the step's
 * loss and gradient are the row-weighted means
 *
 *   L = Σ_i n_i·L_i / B,   ∇L = Σ_i n_i·∇L_i / B        (n_i rows in shard i, B = Σ n_i)
 *
 * which equal the whole-batch ones because the teacher loss is a mean over rows of per-row terms (min-SNR-weighted MSE;
 * GroupNorm normalises within a row). Rows keep their own noise, timestep and caption dropout (keyed per row), so
 * sharding changes no input, only the order of float additions: results are reproducible for a given shard count
 * and agree with one thread to rounding.
 */

/** One shard's inputs as host arrays (what crosses to a worker thread). */
export interface TeacherShard {
  /** Clean images `[n, 3, H, W]`, row-major. */
  x0: Float32Array;
  /** Noise, same shape. */
  noise: Float32Array;
  shape: [number, number, number, number];
  timesteps: Int32Array;
  /** Text states `[n, S, D]`, row-major. */
  context: Float32Array;
  contextShape: [number, number, number];
}

/** A shard's mean loss and its gradient, flattened in the order of the parameter keys. */
export interface ShardGradients {
  loss: number;
  grads: Float32Array;
  rows: number;
}

/** Contiguous row ranges `[start, end)` for `shards` shards of a batch of `batchSize` (sizes differ by ≤ 1; no empty shard). */
export function shardRanges(batchSize: number, shards: number): Array<[number, number]> {
  if (!Number.isInteger(shards) || shards < 1) throw new ShapeError('shard count must be a positive integer', { field: 'workers', expected: '≥ 1', found: shards });
  const n = Math.min(shards, batchSize);
  const out: Array<[number, number]> = [];
  let start = 0;
  for (let i = 0; i < n; i++) {
    const size = Math.floor(batchSize / n) + (i < batchSize % n ? 1 : 0);
    out.push([start, start + size]);
    start += size;
  }
  return out;
}

/** Cuts a built batch and its text states into host shards (the caller still owns the batch and the context). */
export function teacherShards(batch: TeacherBatch, context: tf.Tensor3D, shards: number): TeacherShard[] {
  const [B, C, H, W] = batch.x0.shape;
  const [, S, D] = context.shape;
  const x0 = batch.x0.dataSync() as Float32Array;
  const noise = batch.noise.dataSync() as Float32Array;
  const ctx = context.dataSync() as Float32Array;
  const img = C * H * W;
  return shardRanges(B, shards).map(([a, b]) => ({
    x0: x0.slice(a * img, b * img),
    noise: noise.slice(a * img, b * img),
    shape: [b - a, C, H, W],
    timesteps: batch.timesteps.slice(a, b),
    context: ctx.slice(a * S * D, b * S * D),
    contextShape: [b - a, S, D],
  }));
}

/** The parameter keys in a fixed order (what flat weight and gradient buffers follow). */
export function parameterKeys(params: Record<string, tf.Tensor>): string[] {
  return Object.keys(params).sort();
}

/** Concatenates tensors in `keys` order into one host buffer. */
export function flattenTensors(tensors: Record<string, tf.Tensor>, keys: readonly string[]): Float32Array {
  const total = keys.reduce((s, k) => s + tensors[k]!.size, 0);
  const out = new Float32Array(total);
  let offset = 0;
  for (const k of keys) {
    const t = tensors[k];
    if (!t) throw new ShapeError('tensor missing from the parameter set', { field: k });
    out.set(t.dataSync() as Float32Array, offset);
    offset += t.size;
  }
  return out;
}

/**
 * The row-weighted mean of shard results (formula above) as one tensor per key (the caller owns them), and the loss.
 * Additions run in shard order, so the result is a pure function of the shard results.
 */
export function combineShardGradients(
  results: readonly ShardGradients[],
  keys: readonly string[],
  shapes: Record<string, readonly number[]>,
): { loss: number; grads: Record<string, tf.Tensor> } {
  const rows = results.reduce((s, r) => s + r.rows, 0);
  const size = results[0]!.grads.length;
  const sum = new Float32Array(size);
  let loss = 0;
  for (const r of results) {
    if (r.grads.length !== size) throw new ShapeError('shard gradients differ in length', { field: 'grads', expected: size, found: r.grads.length });
    const w = r.rows / rows;
    loss += w * r.loss;
    for (let i = 0; i < size; i++) sum[i] = sum[i]! + w * r.grads[i]!;
  }
  const grads: Record<string, tf.Tensor> = {};
  let offset = 0;
  for (const k of keys) {
    const shape = shapes[k]!;
    const n = shape.reduce((a, b) => a * b, 1);
    grads[k] = tf.tensor(sum.subarray(offset, offset + n), [...shape]);
    offset += n;
  }
  return { loss, grads };
}
