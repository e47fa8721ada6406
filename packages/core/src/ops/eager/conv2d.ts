import * as tf from '@tensorflow/tfjs-core';
import { customGrad } from './customGrad';

/**
 * NHWC 2-D convolution with wasm-safe custom gradients (STACK.md §2 workaround A). tfjs-wasm has no
 * `Conv2DBackpropFilter`, and its `Conv2DBackpropInput` is a slow non-XNNPACK kernel, so both gradients are forward
 * convolutions here:
 * - dW: a forward conv of the (transposed) input with the (transposed) output gradient as filter, dilated by the
 *   stride;
 * - dX: a forward conv of the output gradient (zero-inserted for stride > 1) with the flipped, in/out-swapped kernel.
 *
 * x `[N, H, W, I]`, w `[kh, kw, I, O]`, symmetric zero padding `pad` (PyTorch semantics).
 */
export function conv2dNhwc(x: tf.Tensor4D, w: tf.Tensor4D, stride: number, pad: number, withGradW = true): tf.Tensor4D {
  if (withGradW) return convXW(stride, pad)(x, w) as tf.Tensor4D;
  return convX(w, stride, pad)(x) as tf.Tensor4D;
}

type Pad4 = [[number, number], [number, number], [number, number], [number, number]];

function padSpec(top: number, bottom: number, left: number, right: number): Pad4 {
  return [[0, 0], [top, bottom], [left, right], [0, 0]];
}

function forward(x: tf.Tensor4D, w: tf.Tensor4D, stride: number, pad: number): tf.Tensor4D {
  return tf.conv2d(x, w, stride, pad === 0 ? 'valid' : padSpec(pad, pad, pad, pad));
}

/** Inserts `s − 1` zeros after every row and column: `[N, OH, OW, C] → [N, OH·s, OW·s, C]`. */
function zeroInsert(dy: tf.Tensor4D, s: number): tf.Tensor4D {
  const [n, oh, ow, c] = dy.shape;
  const cols = tf.pad(tf.reshape(dy, [n * oh, ow, 1, c]), [[0, 0], [0, 0], [0, s - 1], [0, 0]]);
  const rows = tf.pad(tf.reshape(cols, [n, oh, 1, ow * s * c]), [[0, 0], [0, 0], [0, s - 1], [0, 0]]);
  return tf.reshape(rows, [n, oh * s, ow * s, c]);
}

/**
 * `w[kh−1−i, kw−1−j]` (the 180° kernel flip) as a permutation matmul over the kh·kw taps: on wasm `tf.reverse`
 * costs ~8× more (34 ms vs 4.4 ms for a [3,3,256,256] kernel, tools/bench profile).
 */
function flipSpatial(w: tf.Tensor4D): tf.Tensor4D {
  const [kh, kw, i, o] = w.shape;
  const taps = kh * kw;
  if (taps === 1) return w;
  const perm = new Float32Array(taps * taps);
  for (let t = 0; t < taps; t++) perm[t * taps + (taps - 1 - t)] = 1; // row t picks tap taps−1−t
  return tf.reshape(tf.matMul(tf.tensor2d(perm, [taps, taps]), tf.reshape(w, [taps, i * o])), [kh, kw, i, o]);
}

/** dX as a forward conv: full correlation of the (dilated) dy with the flipped kernel, cropped to the input size. */
export function conv2dInputGrad(dy: tf.Tensor4D, w: tf.Tensor4D, xShape: readonly number[], stride: number, pad: number): tf.Tensor4D {
  const [kh, kw] = w.shape;
  const [, h, wd] = xShape as [number, number, number, number];
  const wf = tf.transpose(flipSpatial(w), [0, 1, 3, 2]);
  let d = stride > 1 ? zeroInsert(dy, stride) : dy;
  // padded length must be H + kh − 1; left pad kh − 1 − pad.
  let top = kh - 1 - pad;
  let left = kw - 1 - pad;
  let bottom = h + kh - 1 - top - d.shape[1];
  let right = wd + kw - 1 - left - d.shape[2];
  if (top < 0 || left < 0 || bottom < 0 || right < 0) {
    const t0 = Math.max(0, -top);
    const l0 = Math.max(0, -left);
    const hh = d.shape[1] - t0 - Math.max(0, -bottom);
    const ww = d.shape[2] - l0 - Math.max(0, -right);
    d = tf.slice(d, [0, t0, l0, 0], [-1, hh, ww, -1]);
    top = Math.max(0, top);
    left = Math.max(0, left);
    bottom = Math.max(0, bottom);
    right = Math.max(0, right);
  }
  const noPad = top === 0 && bottom === 0 && left === 0 && right === 0;
  return tf.conv2d(d, wf, 1, noPad ? 'valid' : padSpec(top, bottom, left, right));
}

/** dW as a forward conv (dilation = stride) of the transposed input with the transposed dy as filter. */
export function conv2dFilterGrad(x: tf.Tensor4D, dy: tf.Tensor4D, wShape: readonly number[], stride: number, pad: number): tf.Tensor4D {
  const [kh, kw] = wShape as [number, number, number, number];
  const xt = tf.transpose(x, [3, 1, 2, 0]); // [I, H, W, N]
  const dyt = tf.transpose(dy, [1, 2, 0, 3]); // [OH, OW, N, O]
  const r = tf.conv2d(xt, dyt, 1, pad === 0 ? 'valid' : padSpec(pad, pad, pad, pad), 'NHWC', stride); // [I, ≥kh, ≥kw, O]
  const cropped = r.shape[1] === kh && r.shape[2] === kw ? r : tf.slice(r, [0, 0, 0, 0], [-1, kh, kw, -1]);
  return tf.transpose(cropped, [1, 2, 0, 3]);
}

function convXW(stride: number, pad: number): (x: tf.Tensor, w: tf.Tensor) => tf.Tensor {
  return customGrad((x: tf.Tensor, w: tf.Tensor, save: tf.GradSaveFunc) => {
    save([x, w]);
    return {
      value: forward(x as tf.Tensor4D, w as tf.Tensor4D, stride, pad),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sx, sw] = saved as [tf.Tensor4D, tf.Tensor4D];
        return [
          conv2dInputGrad(dy as tf.Tensor4D, sw, sx.shape, stride, pad),
          conv2dFilterGrad(sx, dy as tf.Tensor4D, sw.shape, stride, pad),
        ];
      },
    };
  });
}

function convX(w: tf.Tensor4D, stride: number, pad: number): (x: tf.Tensor) => tf.Tensor {
  return customGrad((x: tf.Tensor, save: tf.GradSaveFunc) => {
    save([x]);
    return {
      value: forward(x as tf.Tensor4D, w, stride, pad),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => [conv2dInputGrad(dy as tf.Tensor4D, w, saved[0]!.shape, stride, pad)],
    };
  });
}
