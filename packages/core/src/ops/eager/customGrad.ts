import * as tf from '@tensorflow/tfjs-core';

/** A typed `tf.customGrad`: `f(...inputs, save)` returns the value and the gradient of every input. */
export function customGrad<A extends tf.Tensor[]>(
  f: (...args: [...A, tf.GradSaveFunc]) => { value: tf.Tensor; gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.Tensor | tf.Tensor[] },
): (...inputs: A) => tf.Tensor {
  return tf.customGrad(f as never) as unknown as (...inputs: A) => tf.Tensor;
}
