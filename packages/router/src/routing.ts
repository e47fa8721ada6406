import * as tf from '@tensorflow/tfjs-core';
import { ShapeError } from '@aptp/core';
import { balancedAssignment, sinkhornKnoppTf } from '@aptp/ot';
import type { ArchitectureLayout } from '@aptp/unet-gating';
import { cosineSimilarity, widthDepthNormalize } from './normalize';

/**
 * Assignment of prompts to architecture codes (APTP.md §2.5):
 * - training: SwAV Sinkhorn-Knopp (ε 0.05, 3 iterations) on the cosine similarities, hard argmax per prompt;
 * - inference (reference): cosine argmax against the stored code samples;
 * - inference (ours, capacity-aware): the best assignment of a whole batch under per-expert capacities, an exact
 *   integral OT problem solved by `@aptp/ot`'s `balancedAssignment` (the reference has no balancing at inference).
 * Assignments carry no gradient; the selected codes do ({@link selectCodes}).
 */

export interface RoutingScores {
  /** `[B, L]` N(prompt gates) (before row normalisation). */
  promptNormalized: tf.Tensor2D;
  /** `[K, L]` N(code gates) (before row normalisation). */
  codesNormalized: tf.Tensor2D;
  /** `[B, K]` cosine similarities. */
  scores: tf.Tensor2D;
}

/** N(·) of both sides and their cosine similarities. The caller owns the three tensors. */
export function routingScores(promptGates: tf.Tensor2D, codeGates: tf.Tensor2D, layout: ArchitectureLayout): RoutingScores {
  return tf.tidy(() => {
    const promptNormalized = widthDepthNormalize(promptGates, layout);
    const codesNormalized = widthDepthNormalize(codeGates, layout);
    return { promptNormalized, codesNormalized, scores: cosineSimilarity(promptNormalized, codesNormalized) };
  });
}

export interface SinkhornRoutingOptions {
  /** Entropic ε (reference `sinkhorn_epsilon`, 0.05). */
  epsilon: number;
  /** Normalisation rounds (reference `sinkhorn_iterations`, 3). */
  iterations: number;
}

/** SwAV Sinkhorn plan `[B, K]` of cosine scores `[B, K]` (rows sum to 1), from `@aptp/ot`. */
export function sinkhornPlan(scores: tf.Tensor2D, options: SinkhornRoutingOptions): tf.Tensor2D {
  return sinkhornKnoppTf(scores, { epsilon: options.epsilon, iterations: options.iterations });
}

/** Row-wise argmax `[B]` (int32; the first maximum on ties, like `torch.argmax`). */
export function argmaxAssignment(m: tf.Tensor2D): tf.Tensor1D {
  return tf.argMax(m, 1) as tf.Tensor1D;
}

/**
 * One-hot rows `[B, K]` (float32) of integer indices; unlike `tf.oneHot` it accepts K = 1 (the single-architecture
 * and random baselines route everything to one code). Not differentiable (indices carry no gradient).
 */
export function oneHotRows(indices: tf.Tensor1D, K: number): tf.Tensor2D {
  return tf.tidy(() => tf.cast(tf.equal(tf.expandDims(tf.cast(indices, 'int32'), 1), tf.range(0, K, 1, 'int32')), 'float32') as tf.Tensor2D);
}

/**
 * The codes of an assignment: `codes[assignment]` `[B, L]`, as a one-hot matmul so the gradient reaches the codes on
 * every backend (tfjs `gather` has no wasm gradient, STACK.md §2).
 */
export function selectCodes(codes: tf.Tensor2D, assignment: tf.Tensor1D): tf.Tensor2D {
  const K = codes.shape[0];
  if (assignment.rank !== 1) throw new ShapeError('assignment must be 1-D', { field: 'assignment', expected: '[B]', found: assignment.shape });
  return tf.tidy(() => tf.matMul(oneHotRows(assignment, K), codes) as tf.Tensor2D);
}

export interface BalancedRoutingOptions {
  /**
   * Per-expert capacity: one number for all experts or K numbers (prompts per expert). Default ⌈B/K⌉, i.e. as
   * balanced as possible. Must allow every prompt somewhere (Σ capacities ≥ B).
   */
  capacities?: number | ArrayLike<number>;
}

/**
 * Capacity-aware assignment of a batch (host arrays): maximises Σ score[b, expert[b]] subject to at most
 * `capacities[k]` prompts per expert. Exact (integral OT, `@aptp/ot` `balancedAssignment`).
 */
export function balancedExpertAssignment(scores: Float32Array | Float64Array, batch: number, numCodes: number, options: BalancedRoutingOptions = {}): { expert: Int32Array; counts: Int32Array } {
  if (scores.length !== batch * numCodes) throw new ShapeError('scores have the wrong size', { field: 'scores', expected: batch * numCodes, found: scores.length });
  const data = Float64Array.from(scores);
  const r = balancedAssignment({ rows: batch, cols: numCodes, data }, { capacities: options.capacities, maximize: true });
  return { expert: r.assignment, counts: r.counts };
}
