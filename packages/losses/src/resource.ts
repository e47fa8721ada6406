import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, ShapeError } from '@aptp/core';
import { customGrad } from './tensorOps';

/**
 * Resource terms (APTP.md §4.3, §5.4, §5.6; reference `pdm/losses/resource_loss.py` and `Pruner.step`). Inputs are the
 * per-sample resource ratios r_b = cur_prunable_macs(b) / D `[B]` (differentiable w.r.t. the gates; computed by
 * @aptp/unet-gating) and the target p' (already converted from the total-MACs target p, APTP.md §4.3).
 *
 *   r̄ = mean_b r_b
 *   log: log(r̄ / p') if r̄ > p' else log(p' / max(r̄, 1e-6))     mae: |r̄ − p'|     mse: (r̄ − p')²
 *   max term: 1 − max_b r_b          std term: −std_b(r_b)  (unbiased, divisor B − 1)
 */
export const RESOURCE_LOSS_TYPES = ['log', 'mae', 'mse'] as const;
export type ResourceLossType = (typeof RESOURCE_LOSS_TYPES)[number];

function checkRatios(ratios: tf.Tensor, field: string): void {
  if (ratios.rank > 1 || ratios.size === 0) throw new ShapeError('resource ratios must be a non-empty [B] vector or a scalar', { field, expected: '[B]', found: ratios.shape });
}

/** Resource loss of the batch-mean ratio (a `[B]` vector is averaged first; a scalar is used as r̄). */
export function resourceLoss(ratios: tf.Tensor, target: number, type: ResourceLossType = 'log'): tf.Scalar {
  checkRatios(ratios, 'ratios');
  if (!(target > 0) || !Number.isFinite(target)) throw new ConfigError('resource target must be positive', { field: 'target', expected: '> 0', found: target });
  return tf.tidy(() => {
    const mean = tf.mean(ratios) as tf.Scalar;
    switch (type) {
      case 'log':
        // |log(max(r̄, 1e-6) / p')| is the reference's two branches in one expression (log(r̄/p') for r̄ > p',
        // log(p'/r̄) otherwise) with the same gradient, ±1/r̄ (−1/r̄ at r̄ = p' as in its else branch; 0 below the
        // 1e-6 clamp), and no comparison op on the tape (tfjs has no gradient for those).
        return tf.abs(tf.log(tf.div(tf.maximum(mean, 1e-6), target))) as tf.Scalar;
      case 'mae':
        return tf.abs(tf.sub(mean, target)) as tf.Scalar;
      case 'mse':
        return tf.square(tf.sub(mean, target)) as tf.Scalar;
      default:
        throw new ConfigError('unknown resource loss type', { field: 'type', expected: RESOURCE_LOSS_TYPES.join(' | '), found: type });
    }
  });
}

/**
 * `1 − max_b r_b`. On ties the gradient is split evenly among the tied samples (PyTorch's `max()` backward), which
 * matters in the main phase, where samples routed to the same code have identical ratios.
 */
export const maxLoss = customGrad((ratios: tf.Tensor, save: tf.GradSaveFunc) => {
  checkRatios(ratios, 'ratios');
  const max = tf.max(ratios);
  save([ratios, max]);
  return {
    value: tf.sub(1, max),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const mask = tf.cast(tf.equal(saved[0]!, saved[1]!), 'float32');
      return tf.mul(tf.neg(dy), tf.div(mask, tf.sum(mask)));
    },
  };
}) as (ratios: tf.Tensor1D) => tf.Scalar;

/**
 * `−std_b(r_b)` with the unbiased estimator. Deviation from the reference, on purpose: a batch of one sample (where
 * PyTorch returns NaN) gives 0, and identical ratios (std 0, where PyTorch's gradient is NaN) give a zero gradient.
 */
export const stdLoss = customGrad((ratios: tf.Tensor, save: tf.GradSaveFunc) => {
  checkRatios(ratios, 'ratios');
  const n = ratios.size;
  // Shift by the first ratio before centring, so identical ratios centre to exact zeros (std exactly 0).
  const shifted = tf.sub(ratios, tf.slice(tf.reshape(ratios, [-1]), [0], [1]));
  const centred = tf.sub(shifted, tf.mean(shifted));
  const std = n > 1 ? tf.sqrt(tf.div(tf.sum(tf.square(centred)), n - 1)) : tf.scalar(0);
  save([centred, std]);
  return {
    value: tf.neg(std),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [c, s] = saved as [tf.Tensor, tf.Tensor];
      if (n < 2) return tf.zerosLike(c);
      // d std / d r_b = (r_b − r̄) / ((B − 1)·std); zero where std = 0.
      const safe = tf.where(tf.greater(s, 0), s, tf.onesLike(s));
      const g = tf.div(c, tf.mul(safe, n - 1));
      return tf.mul(tf.neg(dy), tf.where(tf.greater(s, 0), g, tf.zerosLike(g)));
    },
  };
}) as (ratios: tf.Tensor1D) => tf.Scalar;
