import * as tf from '@tensorflow/tfjs-core';

/**
 * Small differentiable helpers that stay on wasm's fast paths (STACK.md §2: transposed / batched `matMul` and the
 * `gather` gradient are slow or missing on wasm). Internal to @aptp/losses.
 */

type GradFunc = (dy: tf.Tensor, saved: tf.Tensor[]) => tf.Tensor | tf.Tensor[];

/** `tf.customGrad` with typed tensor arguments (tfjs types every argument as `Tensor | GradSaveFunc`). */
export function customGrad<A extends tf.Tensor[]>(
  f: (...args: [...A, tf.GradSaveFunc]) => { value: tf.Tensor; gradFunc: GradFunc },
): (...args: A) => tf.Tensor {
  const g = tf.customGrad(f as unknown as Parameters<typeof tf.customGrad>[0]);
  return g as unknown as (...args: A) => tf.Tensor;
}

/** Identity in the forward pass, zero gradient (PyTorch `.detach()`). */
export const stopGradient = customGrad((x: tf.Tensor, _save: tf.GradSaveFunc) => ({
  value: tf.clone(x),
  gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy),
})) as <T extends tf.Tensor>(x: T) => T;

/**
 * Row Gram matrix `X Xᵀ` `[B, B]` of `X` `[B, D]`, with an explicit transpose instead of matMul's transpose flags;
 * gradient `(dG + dGᵀ) X`, again without transpose flags.
 */
export const rowGram = customGrad((x: tf.Tensor, save: tf.GradSaveFunc) => {
  save([x]);
  const value = tf.matMul(x as tf.Tensor2D, tf.transpose(x as tf.Tensor2D));
  return {
    value,
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.matMul(tf.add(dy, tf.transpose(dy)) as tf.Tensor2D, saved[0] as tf.Tensor2D),
  };
}) as (x: tf.Tensor2D) => tf.Tensor2D;

/** Rows divided by their L2 norm (`x / x.norm(dim=1, keepdim=True)`; the norm is floored at 1e-12). */
export function rowNormalize(x: tf.Tensor2D): tf.Tensor2D {
  return tf.div(x, tf.maximum(tf.sqrt(tf.sum(tf.square(x), 1, true)), 1e-12));
}
