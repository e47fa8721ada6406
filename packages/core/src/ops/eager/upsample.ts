import * as tf from '@tensorflow/tfjs-core';
import { customGrad } from './customGrad';

/**
 * Nearest-neighbour ×2 upsampling of an NHWC feature map with a custom gradient: tfjs-wasm's
 * `ResizeNearestNeighborGrad` kernel returns wrong values (measured: max error 1.6 on a 3×3 map against the cpu
 * kernel), so the gradient sums each 2×2 output block with two reshaped 3-D sums instead.
 */
export function upsampleNearest2xNhwc(x: tf.Tensor4D): tf.Tensor4D {
  return upsample(x) as tf.Tensor4D;
}

const upsample = customGrad((x: tf.Tensor, _save: tf.GradSaveFunc) => {
  const [b, h, w, c] = x.shape as [number, number, number, number];
  return {
    value: tf.image.resizeNearestNeighbor(x as tf.Tensor4D, [2 * h, 2 * w], false, false),
    gradFunc: (dy: tf.Tensor) => {
      const rows = tf.sum(tf.reshape(dy, [b * h, 2, 2 * w * c]), 1); // [B·H, 2W·C]
      const cols = tf.sum(tf.reshape(rows, [b * h * w, 2, c]), 1); // [B·H·W, C]
      return [tf.reshape(cols, [b, h, w, c])];
    },
  };
});
