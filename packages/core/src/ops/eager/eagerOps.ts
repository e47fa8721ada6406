import * as tf from '@tensorflow/tfjs-core';
import type { Ops } from '../ops';
import { conv2dNhwc } from './conv2d';
import { linearLastAxis } from './matmul';
import { multiHeadAttention } from './attention';
import { upsampleNearest2xNhwc } from './upsample';
import { registerEagerGradients } from './gradients';

// tfjs-core registers no gradients itself (see gradients.ts).
registerEagerGradients();

export interface EagerOpsOptions {
  /**
   * Which weights get gradients. `variables` (default): only trainable `tf.Variable`s — frozen weights held as plain
   * tensors are constants, so their (expensive) gradients are never computed (APTP trains gates with a frozen UNet).
   * `always`: every weight tensor, e.g. for `tf.grads` with respect to plain weight tensors.
   */
  weightGrads?: 'variables' | 'always';
}

/**
 * The eager tfjs implementation of {@link Ops}: NHWC feature maps, conv weights `[kh, kw, I, O]`, linear `[I, O]`.
 * Convolutions, matmuls and attention carry wasm-safe custom gradients (`conv2d.ts`, `matmul.ts`, `attention.ts`);
 * everything else uses tfjs ops whose gradients exist on wasm.
 */
export class EagerOps implements Ops<tf.Tensor> {
  readonly name = 'eager';
  readonly layout = 'NHWC' as const;
  private readonly weightGrads: 'variables' | 'always';

  constructor(options: EagerOpsOptions = {}) {
    this.weightGrads = options.weightGrads ?? 'variables';
  }

  private gradFor(w: tf.Tensor): boolean {
    if (w instanceof tf.Variable) return w.trainable;
    return this.weightGrads === 'always';
  }

  scope<R>(fn: () => R): R {
    return tf.tidy(fn as () => tf.TensorContainer) as unknown as R;
  }

  fromNCHW(x: tf.Tensor): tf.Tensor {
    return tf.transpose(x, [0, 2, 3, 1]);
  }

  toNCHW(x: tf.Tensor): tf.Tensor {
    return tf.transpose(x, [0, 3, 1, 2]);
  }

  featureSize(x: tf.Tensor): { batch: number; height: number; width: number; channels: number } {
    const [batch, height, width, channels] = x.shape as [number, number, number, number];
    return { batch, height, width, channels };
  }

  toTokens(x: tf.Tensor): tf.Tensor {
    const [b, h, w, c] = x.shape as [number, number, number, number];
    return tf.reshape(x, [b, h * w, c]);
  }

  fromTokens(x: tf.Tensor, height: number, width: number): tf.Tensor {
    const [b, , c] = x.shape as [number, number, number];
    return tf.reshape(x, [b, height, width, c]);
  }

  conv2d(x: tf.Tensor, w: tf.Tensor, bias: tf.Tensor | null, options: { stride?: number; padding: number }): tf.Tensor {
    const stride = options.stride ?? 1;
    const [kh, kw, ci, co] = w.shape as [number, number, number, number];
    if (kh === 1 && kw === 1 && stride === 1 && options.padding === 0) {
      return linearLastAxis(x, tf.reshape(w, [ci, co]) as tf.Tensor2D, bias, this.gradFor(w));
    }
    const y = conv2dNhwc(x as tf.Tensor4D, w as tf.Tensor4D, stride, options.padding, this.gradFor(w));
    return bias ? tf.add(y, bias) : y;
  }

  linear(x: tf.Tensor, w: tf.Tensor, bias: tf.Tensor | null): tf.Tensor {
    return linearLastAxis(x, w as tf.Tensor2D, bias, this.gradFor(w));
  }

  groupNorm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, groups: number, eps: number): tf.Tensor {
    const [b, h, w, c] = x.shape as [number, number, number, number];
    const g = tf.reshape(x, [b, h * w, groups, c / groups]);
    const { mean, variance } = tf.moments(g, [1, 3], true);
    const normed = tf.reshape(tf.mul(tf.sub(g, mean), tf.rsqrt(tf.add(variance, eps))), [b, h, w, c]);
    return tf.add(tf.mul(normed, gamma), beta);
  }

  layerNorm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, eps: number): tf.Tensor {
    const { mean, variance } = tf.moments(x, [x.rank - 1], true);
    const normed = tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, eps)));
    return tf.add(tf.mul(normed, gamma), beta);
  }

  attention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, heads: number): tf.Tensor {
    return multiHeadAttention(q as tf.Tensor3D, k as tf.Tensor3D, v as tf.Tensor3D, heads);
  }

  upsampleNearest2x(x: tf.Tensor): tf.Tensor {
    return upsampleNearest2xNhwc(x as tf.Tensor4D);
  }

  timestepEmbedding(timesteps: tf.Tensor, dim: number, flipSinToCos: boolean, freqShift: number): tf.Tensor {
    const half = Math.floor(dim / 2);
    // diffusers evaluates the frequencies in float32: exp((−ln 10000 · i) / (half − shift)).
    const freqs = new Float32Array(half);
    const negLog = Math.fround(-Math.log(10000));
    for (let i = 0; i < half; i++) freqs[i] = Math.fround(Math.exp(Math.fround(Math.fround(negLog * i) / Math.fround(half - freqShift))));
    const t = timesteps.dtype === 'float32' ? timesteps : tf.cast(timesteps, 'float32');
    const arg = tf.mul(tf.reshape(t, [-1, 1]), tf.tensor2d(freqs, [1, half]));
    const parts = flipSinToCos ? [tf.cos(arg), tf.sin(arg)] : [tf.sin(arg), tf.cos(arg)];
    const emb = tf.concat(parts, 1);
    return dim % 2 === 1 ? tf.pad(emb, [[0, 0], [0, 1]]) : emb;
  }

  add(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
    return tf.add(a, b);
  }

  mul(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
    return tf.mul(a, b);
  }

  scale(x: tf.Tensor, s: number): tf.Tensor {
    return tf.mul(x, s);
  }

  silu(x: tf.Tensor): tf.Tensor {
    return tf.mul(x, tf.sigmoid(x));
  }

  gelu(x: tf.Tensor): tf.Tensor {
    return tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1));
  }

  concatChannels(xs: tf.Tensor[]): tf.Tensor {
    return xs.length === 1 ? tf.clone(xs[0]!) : tf.concat(xs, -1);
  }

  sliceChannels(x: tf.Tensor, start: number, size: number): tf.Tensor {
    const begin = x.shape.map((_, i) => (i === x.rank - 1 ? start : 0));
    const sizes = x.shape.map((n, i) => (i === x.rank - 1 ? size : n));
    return tf.slice(x, begin, sizes);
  }

  /** `[B, C]` → broadcastable against `x` (feature map `[B,1,1,C]`, tokens `[B,1,C]`, vectors `[B,C]`). */
  private perSample(v: tf.Tensor, rank: number): tf.Tensor {
    const [b, c] = v.shape as [number, number];
    return tf.reshape(v, [b, ...new Array<number>(rank - 2).fill(1), c]);
  }

  addChannels(x: tf.Tensor, v: tf.Tensor): tf.Tensor {
    return tf.add(x, this.perSample(v, x.rank));
  }

  scaleChannels(x: tf.Tensor, g: tf.Tensor): tf.Tensor {
    return tf.mul(x, this.perSample(g, x.rank));
  }

  expandGroups(g: tf.Tensor, groupSize: number): tf.Tensor {
    if (groupSize === 1) return tf.clone(g);
    const [b, w] = g.shape as [number, number];
    return tf.reshape(tf.broadcastTo(tf.reshape(g, [b, w, 1]), [b, w, groupSize]), [b, w * groupSize]);
  }

  blend(x: tf.Tensor, fx: tf.Tensor, d: tf.Tensor): tf.Tensor {
    const dd = tf.reshape(d, [d.shape[0]!, ...new Array<number>(x.rank - 1).fill(1)]);
    return tf.add(tf.mul(x, tf.sub(1, dd)), tf.mul(fx, dd));
  }

  meanTokens(x: tf.Tensor): tf.Tensor {
    return tf.mean(x, 1);
  }

  asToken(v: tf.Tensor): tf.Tensor {
    const [b, c] = v.shape as [number, number];
    return tf.reshape(v, [b, 1, c]);
  }

  concatTokens(xs: tf.Tensor[]): tf.Tensor {
    return xs.length === 1 ? tf.clone(xs[0]!) : tf.concat(xs, 1);
  }

  repeatBatch(x: tf.Tensor, times: number): tf.Tensor {
    return times === 1 ? tf.clone(x) : tf.concat(new Array<tf.Tensor>(times).fill(x), 0);
  }

  batchSize(x: tf.Tensor): number {
    return x.shape[0]!;
  }
}
