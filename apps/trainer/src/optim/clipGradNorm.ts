import * as tf from '@tensorflow/tfjs-core';
import { ConfigError } from '@aptp/core';

/**
 * Gradient-norm clipping as `torch.nn.utils.clip_grad_norm_(params, maxNorm)` (norm type 2): the total norm is the
 * 2-norm of all gradients together, and every gradient is multiplied by `min(1, maxNorm / (totalNorm + 1e-6))`.
 * Returns new tensors (the caller owns them and `totalNorm`); the inputs are not modified or disposed.
 */
export function clipGradNorm<K extends string>(
  grads: Record<K, tf.Tensor>,
  maxNorm: number,
): { grads: Record<K, tf.Tensor>; totalNorm: tf.Scalar } {
  if (!(maxNorm > 0)) throw new ConfigError('max grad norm must be positive', { field: 'maxGradNorm', found: maxNorm });
  const names = Object.keys(grads) as K[];
  return tf.tidy(() => {
    const squares = names.map((n) => tf.sum(tf.square(grads[n])));
    const totalNorm = tf.sqrt(squares.length > 0 ? tf.addN(squares) : tf.scalar(0)) as tf.Scalar;
    const coef = tf.minimum(tf.div(maxNorm, tf.add(totalNorm, 1e-6)), 1);
    const out = {} as Record<K, tf.Tensor>;
    for (const n of names) out[n] = tf.mul(grads[n], coef);
    return { grads: out, totalNorm };
  }) as unknown as { grads: Record<K, tf.Tensor>; totalNorm: tf.Scalar };
}
