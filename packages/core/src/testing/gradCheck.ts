import * as tf from '@tensorflow/tfjs-core';

export interface GradCheckOptions {
  /** Finite-difference step (central differences, computed in float32 tfjs). */
  eps?: number;
  /** How many coordinates per input to probe (spread evenly); default all up to 24. */
  probes?: number;
  rtol?: number;
  atol?: number;
  name?: string;
}

/**
 * Compares `tf.grads(f)` with central finite differences at a few coordinates of each input.
 * `f` must return a scalar. Use small, well-scaled problems: float32 differences are noisy.
 */
export function gradCheck(f: (...xs: tf.Tensor[]) => tf.Scalar, inputs: tf.Tensor[], options: GradCheckOptions = {}): void {
  const eps = options.eps ?? 1e-2;
  const rtol = options.rtol ?? 2e-2;
  const atol = options.atol ?? 1e-3;
  const gradTensors = tf.grads(f)(inputs);
  const grads = gradTensors.map((g) => Array.from(g.dataSync()));
  tf.dispose(gradTensors);
  inputs.forEach((x, k) => {
    const base = x.dataSync().slice();
    const n = base.length;
    const probes = Math.min(n, options.probes ?? 24);
    for (let p = 0; p < probes; p++) {
      const i = Math.floor((p * n) / probes);
      const evalAt = (delta: number): number =>
        tf.tidy(() => {
          const data = base.slice();
          data[i] = data[i]! + delta;
          const xs = inputs.map((y, j) => (j === k ? tf.tensor(data, x.shape, x.dtype) : y));
          return f(...xs).dataSync()[0]!;
        });
      const fd = (evalAt(eps) - evalAt(-eps)) / (2 * eps);
      const an = grads[k]![i]!;
      if (!(Math.abs(fd - an) <= atol + rtol * Math.max(Math.abs(fd), Math.abs(an)))) {
        throw new Error(`${options.name ?? 'gradCheck'}: input ${k} index ${i}: autodiff ${an} vs finite difference ${fd}`);
      }
    }
  });
}
