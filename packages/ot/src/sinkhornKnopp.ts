import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, ShapeError } from '@aptp/core';
import { Matrix, MatrixInput, toMatrix, zerosMatrix } from './matrix';

/**
 * SwAV-style Sinkhorn-Knopp (APTP.md §2.5, training-time routing; reference `quantizer.py`, credited to SwAV's
 * `distributed_sinkhorn`). Given similarity scores `S` `[B, K]` (B samples, K codes):
 *
 *   Q = exp(S / ε)ᵀ  [K, B];  Q ← Q / ΣQ;
 *   `iterations` times: { Q ← Q / rowsums(Q) / K  (every code gets mass 1/K);
 *                         Q ← Q / colsums(Q) / B  (every sample gets mass 1/B) };
 *   Q ← Q · B;  return Qᵀ  [B, K]  (each row sums to 1).
 *
 * The reference stops after a fixed, small number of iterations (3), so the result is *not* a converged plan; the
 * caller takes `argmax` per row (hard assignment). We compute the same quantity in the log domain
 * (`log Q ← log Q − logsumexp(log Q)`), which is mathematically identical but cannot overflow or underflow for small
 * ε (the plain form overflows float32 once S/ε > 88, e.g. ε = 0.01 with cosine scores).
 */
export interface SinkhornKnoppOptions {
  /** Entropic temperature ε (reference `sinkhorn_epsilon`, default 0.05). */
  epsilon?: number;
  /** Number of row/column normalisation rounds (reference `sinkhorn_iterations`, default 3). */
  iterations?: number;
}

export const SINKHORN_KNOPP_DEFAULTS = { epsilon: 0.05, iterations: 3 } as const;

function checkOptions(options: SinkhornKnoppOptions): { epsilon: number; iterations: number } {
  const epsilon = options.epsilon ?? SINKHORN_KNOPP_DEFAULTS.epsilon;
  const iterations = options.iterations ?? SINKHORN_KNOPP_DEFAULTS.iterations;
  if (!(epsilon > 0) || !Number.isFinite(epsilon)) {
    throw new ConfigError('Sinkhorn epsilon must be a positive number', { field: 'epsilon', expected: '> 0', found: epsilon });
  }
  if (!Number.isInteger(iterations) || iterations < 0) {
    throw new ConfigError('Sinkhorn iterations must be a non-negative integer', { field: 'iterations', expected: 'integer >= 0', found: iterations });
  }
  return { epsilon, iterations };
}

function logSumExp(values: Float64Array, start: number, count: number, stride: number): number {
  let max = -Infinity;
  for (let k = 0; k < count; k++) max = Math.max(max, values[start + k * stride]!);
  if (max === -Infinity) return -Infinity;
  let s = 0;
  for (let k = 0; k < count; k++) s += Math.exp(values[start + k * stride]! - max);
  return max + Math.log(s);
}

/** SwAV Sinkhorn-Knopp in float64 on host arrays: scores `[B, K]` → soft assignment `[B, K]` (rows sum to 1). */
export function sinkhornKnopp(scores: MatrixInput, options: SinkhornKnoppOptions = {}): Matrix {
  const { epsilon, iterations } = checkOptions(options);
  const S = toMatrix(scores, 'scores');
  const B = S.rows;
  const K = S.cols;
  const logQ = new Float64Array(B * K); // [B, K] = the reference's Qᵀ
  for (let k = 0; k < logQ.length; k++) logQ[k] = S.data[k]! / epsilon;
  const total = logSumExp(logQ, 0, B * K, 1);
  for (let k = 0; k < logQ.length; k++) logQ[k] -= total;
  const logK = Math.log(K);
  const logB = Math.log(B);
  for (let it = 0; it < iterations; it++) {
    for (let k = 0; k < K; k++) {
      // a code's total mass (the reference's row of Q) → 1/K
      const lse = logSumExp(logQ, k, B, K);
      for (let b = 0; b < B; b++) logQ[b * K + k] -= lse + logK;
    }
    for (let b = 0; b < B; b++) {
      // a sample's total mass (the reference's column of Q) → 1/B
      const lse = logSumExp(logQ, b * K, K, 1);
      for (let k = 0; k < K; k++) logQ[b * K + k] -= lse + logB;
    }
  }
  const out = zerosMatrix(B, K);
  for (let k = 0; k < logQ.length; k++) out.data[k] = Math.exp(logQ[k]! + logB);
  return out;
}

/**
 * SwAV Sinkhorn-Knopp on a tfjs tensor (any backend; used inside a training step, no gradient is intended):
 * scores `[B, K]` → soft assignment `[B, K]` whose rows sum to 1. The caller owns the result.
 */
export function sinkhornKnoppTf(scores: tf.Tensor2D, options: SinkhornKnoppOptions = {}): tf.Tensor2D {
  const { epsilon, iterations } = checkOptions(options);
  if (scores.rank !== 2 || scores.shape[0] === 0 || scores.shape[1] === 0) {
    throw new ShapeError('scores must be a non-empty 2-D tensor [B, K]', { field: 'scores', expected: '[B, K]', found: scores.shape });
  }
  const [B, K] = scores.shape;
  return tf.tidy((): tf.Tensor2D => {
    let logQ: tf.Tensor = tf.div(tf.cast(scores, 'float32'), epsilon); // [B, K]
    logQ = tf.sub(logQ, tf.logSumExp(logQ));
    const logK = Math.log(K);
    const logB = Math.log(B);
    for (let it = 0; it < iterations; it++) {
      logQ = tf.sub(logQ, tf.add(tf.logSumExp(logQ, 0, true), logK)); // per code: mass 1/K
      logQ = tf.sub(logQ, tf.add(tf.logSumExp(logQ, 1, true), logB)); // per sample: mass 1/B
    }
    return tf.exp(tf.add(logQ, logB)) as tf.Tensor2D;
  });
}
