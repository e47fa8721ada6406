import * as tf from '@tensorflow/tfjs-core';
import { customGrad } from './customGrad';

/**
 * Transpose-free 2-D matmul with a custom gradient (STACK.md §2 workaround B): wasm's matmul is 15–50× slower with a
 * transpose flag, and tfjs's own MatMul gradient uses those flags. Here both the forward and the gradients are plain
 * `matMul(a, b)` calls on explicitly transposed operands.
 *
 * @param withGradB false when `b` is a constant (e.g. a frozen weight): its gradient is then not computed at all.
 */
export function matMul2d(a: tf.Tensor2D, b: tf.Tensor2D, withGradB = true): tf.Tensor2D {
  if (withGradB) return matMulAB(a, b) as tf.Tensor2D;
  return matMulA(b)(a) as tf.Tensor2D;
}

const matMulAB = customGrad((a: tf.Tensor, b: tf.Tensor, save: tf.GradSaveFunc) => {
  save([a, b]);
  return {
    value: tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [sa, sb] = saved as [tf.Tensor2D, tf.Tensor2D];
      return [tf.matMul(dy as tf.Tensor2D, tf.transpose(sb)), tf.matMul(tf.transpose(sa), dy as tf.Tensor2D)];
    },
  };
});

function matMulA(b: tf.Tensor2D): (a: tf.Tensor) => tf.Tensor {
  return customGrad((a: tf.Tensor, _save: tf.GradSaveFunc) => ({
    value: tf.matMul(a as tf.Tensor2D, b),
    gradFunc: (dy: tf.Tensor) => [tf.matMul(dy as tf.Tensor2D, tf.transpose(b))],
  })) as (a: tf.Tensor) => tf.Tensor;
}

/** `x·W (+ b)` over the last axis of `x [..., I]` with `w [I, O]`, through {@link matMul2d}. */
export function linearLastAxis(x: tf.Tensor, w: tf.Tensor2D, bias: tf.Tensor | null, withGradW = true): tf.Tensor {
  const inF = x.shape[x.shape.length - 1]!;
  const outF = w.shape[1];
  const lead = x.shape.slice(0, -1);
  const rows = lead.reduce((p, q) => p * q, 1);
  let y: tf.Tensor = matMul2d(tf.reshape(x, [rows, inF]), w, withGradW);
  if (bias) y = tf.add(y, bias);
  return tf.reshape(y, [...lead, outF]);
}
