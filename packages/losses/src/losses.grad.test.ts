import * as tf from '@tensorflow/tfjs-core';
import { describeBackends, expectClose, expectNoTensorLeak, gradCheck } from '@aptp/core/testing';
import { contrastiveLoss } from './contrastive';
import { diffusionLoss, minSnrWeights } from './diffusion';
import { blockDistillationLoss, distillationLoss } from './distillation';
import { maxLoss, resourceLoss, stdLoss } from './resource';

/** Deterministic pseudo-random values in [lo, hi). */
function values(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return lo + ((hi - lo) * s) / 4294967296;
  });
}

/** Float64 host reference of the contrastive loss (independent of tfjs), for finite differences. */
function contrastiveRef(P: number[][], A: number[][], tau = 0.03): number {
  const norm = (X: number[][]): number[][] => X.map((r) => {
    const n = Math.sqrt(r.reduce((s, v) => s + v * v, 0));
    return r.map((v) => v / n);
  });
  const softmaxSim = (X: number[][]): number[][] => {
    const Xn = norm(X);
    return Xn.map((r) => {
      const logits = Xn.map((q) => q.reduce((s, v, k) => s + v * r[k]!, 0) / tau);
      const mx = Math.max(...logits);
      const e = logits.map((l) => Math.exp(l - mx));
      const z = e.reduce((s, v) => s + v, 0);
      return e.map((v) => v / z);
    });
  };
  const PA = softmaxSim(A);
  const PT = softmaxSim(P);
  let sum = 0;
  PA.forEach((r, i) => r.forEach((x, j) => {
    const y = PT[i]![j]!;
    sum += -(y * Math.max(Math.log(x), -100) + (1 - y) * Math.max(Math.log(1 - x), -100));
  }));
  return sum / (PA.length * PA.length);
}

describeBackends('loss gradients', (backend) => {
  it('contrastive: gradient w.r.t. the architecture vectors matches float64 finite differences; the prompt side gets none', () => {
    const B = 4;
    const L = 6;
    const dp = 5;
    // Clustered inputs (a shared direction plus noise) so both similarity matrices are far from the identity.
    const base = values(L, 1, 0.5, 1);
    const A = Array.from({ length: B }, (_, b) => Array.from(values(L, 10 + b, -0.15, 0.15), (v, k) => v + base[k]!));
    const pbase = values(dp, 2, 0.5, 1);
    const P = Array.from({ length: B }, (_, b) => Array.from(values(dp, 20 + b, -0.1, 0.1), (v, k) => v + pbase[k]!));
    const a = tf.tensor2d(A);
    const p = tf.tensor2d(P);
    const [ga, gp] = tf.grads((x: tf.Tensor, y: tf.Tensor) => contrastiveLoss(y as tf.Tensor2D, x as tf.Tensor2D))([a, p]);
    try {
      const h = 1e-6;
      const fd: number[] = [];
      for (let b = 0; b < B; b++) {
        for (let k = 0; k < L; k++) {
          const up = A.map((r) => r.slice());
          const dn = A.map((r) => r.slice());
          up[b]![k] += h;
          dn[b]![k] -= h;
          fd.push((contrastiveRef(P, up) - contrastiveRef(P, dn)) / (2 * h));
        }
      }
      const maxFd = Math.max(...fd.map(Math.abs));
      expect(maxFd).toBeGreaterThan(1e-2); // the check is not vacuous
      expectClose(ga!, fd, { name: `d contrastive / d A [${backend}]`, atol: 2e-3 * maxFd });
      expect(Math.max(...Array.from(gp!.dataSync(), Math.abs))).toBe(0);
      gradCheck((x) => contrastiveLoss(p, x as tf.Tensor2D), [a], { eps: 2e-3, name: 'contrastive (tfjs finite differences)' });
    } finally {
      tf.dispose([a, p, ga!, gp!]);
    }
  });

  it('min-SNR diffusion loss: gradient matches finite differences and equals 2·w_b·(pred − target)/(B·D)', () => {
    const pred = tf.tensor4d(values(2 * 3 * 2 * 2, 5), [2, 3, 2, 2]);
    const target = tf.tensor4d(values(2 * 3 * 2 * 2, 6), [2, 3, 2, 2]);
    const w = minSnrWeights([0.5, 8], 5, 'v_prediction'); // 1, 5/9
    const g = tf.grad((x: tf.Tensor) => diffusionLoss(x, target, w))(pred);
    const expected = tf.tidy(() => tf.mul(tf.sub(pred, target), tf.reshape(tf.tensor1d(Array.from(w, (v) => (2 * v) / (2 * 12))), [2, 1, 1, 1])));
    try {
      expectClose(g, expected.dataSync(), { name: 'd L_ddpm / d pred', atol: 1e-7 });
      gradCheck((x) => diffusionLoss(x, target, w), [pred], { name: 'diffusion loss' });
    } finally {
      tf.dispose([pred, target, g, expected]);
    }
  });

  it('distillation and block distillation: finite differences on the student, no gradient into the teacher', () => {
    const s1 = tf.tensor3d(values(12, 7), [2, 3, 2]);
    const t1 = tf.tensor3d(values(12, 8), [2, 3, 2]);
    const s2 = tf.tensor2d(values(6, 9), [2, 3]);
    const t2 = tf.tensor2d(values(6, 10), [2, 3]);
    const [gs, gt] = tf.grads((s: tf.Tensor, t: tf.Tensor) => distillationLoss(s, t))([s1, t1]);
    try {
      expect(Math.max(...Array.from(gt!.dataSync(), Math.abs))).toBe(0);
      expectClose(gs!, tf.tidy(() => tf.div(tf.mul(2, tf.sub(s1, t1)), 12)).dataSync(), { name: 'd L_distill / d student', atol: 1e-7 });
      gradCheck((a, b) => blockDistillationLoss({ d0: a, m: b }, { d0: t1, m: t2 }), [s1, s2], { name: 'block distillation' });
    } finally {
      tf.dispose([s1, t1, s2, t2, gs!, gt!]);
    }
  });

  it('resource loss (log above and below the target, mae, mse): finite differences', () => {
    const above = tf.tensor1d([0.9, 0.7, 0.8]);
    const below = tf.tensor1d([0.3, 0.2, 0.4]);
    try {
      for (const type of ['log', 'mae', 'mse'] as const) {
        gradCheck((r) => resourceLoss(r, 0.55, type), [above], { eps: 1e-3, name: `resource ${type} above` });
        gradCheck((r) => resourceLoss(r, 0.55, type), [below], { eps: 1e-3, name: `resource ${type} below` });
      }
      const g = tf.grad((r: tf.Tensor) => resourceLoss(r, 0.55, 'log'))(below);
      expectClose(g, [-1 / 0.9, -1 / 0.9, -1 / 0.9], { name: 'd log(p/r̄) / d r', rtol: 1e-5 }); // −1/(B·r̄), r̄ = 0.3
      g.dispose();
    } finally {
      tf.dispose([above, below]);
    }
  });

  it('max and std terms: finite differences; ties split the gradient evenly (PyTorch max()); equal ratios give zero std gradient', () => {
    const r = tf.tensor1d([0.3, 0.9, 0.5, 0.6]);
    const tie = tf.tensor1d([0.5, 0.9, 0.9]);
    const same = tf.tensor1d([0.4, 0.4, 0.4]);
    const one = tf.tensor1d([0.7]);
    const gMax = tf.grad((x: tf.Tensor) => maxLoss(x as tf.Tensor1D))(tie);
    const gStd = tf.grad((x: tf.Tensor) => stdLoss(x as tf.Tensor1D))(same);
    const gOne = tf.grad((x: tf.Tensor) => stdLoss(x as tf.Tensor1D))(one);
    const vOne = stdLoss(one);
    try {
      gradCheck((x) => maxLoss(x as tf.Tensor1D), [r], { eps: 1e-3, name: 'max loss' });
      gradCheck((x) => stdLoss(x as tf.Tensor1D), [r], { eps: 1e-3, name: 'std loss' });
      expectClose(gMax, [0, -0.5, -0.5], { name: 'max tie gradient', atol: 1e-7 });
      expectClose(gStd, [0, 0, 0], { name: 'std gradient at std 0', atol: 0 });
      expectClose(gOne, [0], { name: 'std gradient, batch 1', atol: 0 });
      expectClose(vOne, 0, { name: 'std of one sample', atol: 0 });
    } finally {
      tf.dispose([r, tie, same, one, gMax, gStd, gOne, vOne]);
    }
  });

  it('loss and gradient computations leak no tensors', async () => {
    const a = tf.tensor2d(values(12, 3), [3, 4]);
    const p = tf.tensor2d(values(9, 4), [3, 3]);
    const r = tf.tensor1d([0.4, 0.7, 0.7]);
    const x = tf.tensor2d(values(6, 5), [3, 2]);
    const y = tf.tensor2d(values(6, 6), [3, 2]);
    await expectNoTensorLeak(() => {
      tf.dispose([
        contrastiveLoss(p, a),
        resourceLoss(r, 0.5),
        maxLoss(r),
        stdLoss(r),
        diffusionLoss(x, y, [1, 0.5, 0.2]),
        distillationLoss(x, y),
        blockDistillationLoss({ d0: x }, { d0: y }),
      ]);
      const grads = tf.grads((aa: tf.Tensor, rr: tf.Tensor, xx: tf.Tensor) =>
        tf.addN([contrastiveLoss(p, aa as tf.Tensor2D), resourceLoss(rr, 0.5), maxLoss(rr as tf.Tensor1D), stdLoss(rr as tf.Tensor1D), diffusionLoss(xx, y, [1, 1, 1]), blockDistillationLoss({ d0: xx }, { d0: y })]) as tf.Scalar,
      )([a, r, x]);
      tf.dispose(grads);
    }, { name: 'losses' });
    tf.dispose([a, p, r, x, y]);
  });
});
