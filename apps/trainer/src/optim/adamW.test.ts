import * as tf from '@tensorflow/tfjs-core';
import { InputError, Rng, ShapeError } from '@aptp/core';
import { describeBackends, expectClose, expectNoTensorLeak } from '@aptp/core/testing';
import { AdamW, namedGrads } from './adamW';
import { lrSchedule } from './lrSchedule';
import { createAdamW } from './config';

/**
 * Float64 re-derivation of torch.optim.AdamW (docs algorithm, amsgrad off) + clip_grad_norm_, independent of the
 * implementation under test: per-parameter step counts, parameters without a gradient skipped.
 */
interface RefParam {
  theta: number[];
  m: number[];
  v: number[];
  t: number;
  group: string;
}
function refStep(
  params: Record<string, RefParam>,
  grads: Record<string, number[]>,
  hp: { lrs: Record<string, number>; wd: Record<string, number>; b1: number; b2: number; eps: number; maxNorm: number | null },
): number {
  let total = 0;
  for (const g of Object.values(grads)) for (const x of g) total += x * x;
  total = Math.sqrt(total);
  const coef = hp.maxNorm === null ? 1 : Math.min(1, hp.maxNorm / (total + 1e-6));
  for (const [name, g0] of Object.entries(grads)) {
    const p = params[name]!;
    const lr = hp.lrs[p.group]!;
    p.t += 1;
    for (let i = 0; i < p.theta.length; i++) {
      const g = g0[i]! * coef;
      p.theta[i] = p.theta[i]! - lr * hp.wd[p.group]! * p.theta[i]!;
      p.m[i] = hp.b1 * p.m[i]! + (1 - hp.b1) * g;
      p.v[i] = hp.b2 * p.v[i]! + (1 - hp.b2) * g * g;
      const mHat = p.m[i]! / (1 - hp.b1 ** p.t);
      const vHat = p.v[i]! / (1 - hp.b2 ** p.t);
      p.theta[i] = p.theta[i]! - (lr * mHat) / (Math.sqrt(vHat) + hp.eps);
    }
  }
  return total;
}

function variable(values: number[], shape: number[]): tf.Variable {
  return tf.tidy(() => tf.variable(tf.tensor(values, shape, 'float32'), true));
}

describeBackends('AdamW', () => {
  it('matches the PyTorch docs formula on hand-computed numbers (lr 0.1, λ 0.01, two steps)', () => {
    const w = variable([1], [1]);
    const opt = new AdamW([{ name: 'g', lr: 0.1, weightDecay: 0.01, params: { w } }]);
    const g1 = tf.tensor([0.5], [1]);
    opt.step({ w: g1 });
    // t=1: θ = 1 − 0.1·0.01·1 = 0.999; m = 0.05, v = 0.00025; m̂ = 0.5, v̂ = 0.25; θ = 0.999 − 0.1·0.5/(0.5 + 1e-8)
    expect(w.dataSync()[0]).toBeCloseTo(0.899, 6);
    const g2 = tf.tensor([-0.25], [1]);
    opt.step({ w: g2 });
    // t=2: θ = 0.899·0.999; m = 0.045 − 0.025 = 0.02, v = 0.999·0.00025 + 0.001·0.0625 = 0.00031225;
    // m̂ = 0.02/0.19, v̂ = 0.00031225/0.001999
    const expected = 0.899 * 0.999 - 0.1 * (0.02 / 0.19) / Math.sqrt(0.00031225 / 0.001999);
    expect(w.dataSync()[0]).toBeCloseTo(expected, 6);
    expect(expected).toBeCloseTo(0.871467, 5);
    tf.dispose([w, g1, g2]);
    opt.dispose();
  });

  it('matches a float64 re-derivation over groups, weight decay, warm-up, clipping and skipped parameters', () => {
    const rng = Rng.forKey(7, 'adamw');
    const shapes: Record<string, { shape: number[]; group: string }> = {
      'hypernet.weight': { shape: [3, 4], group: 'hypernet' },
      'hypernet.bias': { shape: [4], group: 'hypernet' },
      'quantizer.embedding': { shape: [2, 4], group: 'quantizer' },
    };
    const targets: Record<string, number[]> = {};
    const ref: Record<string, RefParam> = {};
    const vars: Record<string, tf.Variable> = {};
    for (const [name, { shape, group }] of Object.entries(shapes)) {
      const n = shape.reduce((a, b) => a * b, 1);
      const init = Array.from(rng.normal(n));
      targets[name] = Array.from(rng.normal(n, 0, 2));
      ref[name] = { theta: [...init], m: new Array(n).fill(0), v: new Array(n).fill(0), t: 0, group };
      vars[name] = variable(init, shape);
    }
    const lrBase = { hypernet: 0.05, quantizer: 0.02 };
    const wd = { hypernet: 0.1, quantizer: 0 };
    const schedule = lrSchedule('constant_with_warmup', { warmupSteps: 2 });
    const opt = new AdamW(
      [
        { name: 'hypernet', lr: lrBase.hypernet, weightDecay: wd.hypernet, params: { 'hypernet.weight': vars['hypernet.weight']!, 'hypernet.bias': vars['hypernet.bias']! } },
        { name: 'quantizer', lr: lrBase.quantizer, params: { 'quantizer.embedding': vars['quantizer.embedding']! } },
      ],
      { weightDecay: wd.quantizer, schedule, maxGradNorm: 1.5 },
    );
    for (let k = 0; k < 6; k++) {
      // Loss ½·Σ(θ − target)² ⇒ g = θ − target. The quantizer gets no gradient in the first 3 steps (as in APTP's
      // pre-training phase): torch skips it, so its own step count starts later.
      const names = Object.keys(shapes).filter((n) => k >= 3 || !n.startsWith('quantizer'));
      const refGrads: Record<string, number[]> = {};
      for (const n of names) refGrads[n] = ref[n]!.theta.map((x, i) => x - targets[n]![i]!);
      const mult = schedule(k);
      const refNorm = refStep(ref, refGrads, { lrs: { hypernet: lrBase.hypernet * mult, quantizer: lrBase.quantizer * mult }, wd, b1: 0.9, b2: 0.999, eps: 1e-8, maxNorm: 1.5 });
      const grads: Record<string, tf.Tensor> = {};
      for (const n of names) grads[n] = tf.tidy(() => tf.sub(vars[n]!, tf.tensor(targets[n]!, shapes[n]!.shape)));
      const info = opt.step(grads);
      tf.dispose(Object.values(grads));
      expect(info.step).toBe(k + 1);
      expect(info.lrs.hypernet).toBeCloseTo(lrBase.hypernet * mult, 12);
      expect(info.gradNorm!).toBeCloseTo(refNorm, 4);
      for (const n of Object.keys(shapes)) expectClose(vars[n]!.dataSync(), ref[n]!.theta, { name: `${n} after step ${k + 1}`, atol: 2e-6, rtol: 0 });
    }
    const state = opt.getState();
    expect(state.step).toBe(6);
    expect(state.paramSteps).toEqual({ 'hypernet.weight': 6, 'hypernet.bias': 6, 'quantizer.embedding': 3 });
    expectClose(state.moments['quantizer.embedding.exp_avg']!.data as Float32Array, ref['quantizer.embedding']!.m, { name: 'exp_avg', atol: 1e-6, rtol: 0 });
    expectClose(state.moments['hypernet.weight.exp_avg_sq']!.data as Float32Array, ref['hypernet.weight']!.v, { name: 'exp_avg_sq', atol: 1e-7, rtol: 0 });
    opt.dispose();
    tf.dispose(Object.values(vars));
  });

  it('continues bit-identically after getState → setState into a fresh optimizer', () => {
    const make = (): { w: tf.Variable; opt: AdamW } => {
      const w = variable([0.3, -1.2, 2.5, 0.1], [2, 2]);
      return { w, opt: createAdamW([{ name: 'unet', lr: 0.01, params: { w } }], { lrWarmupSteps: 3, adamWeightDecay: 0.05 }) };
    };
    const target = tf.tensor([1, 2, 3, 4], [2, 2]);
    const stepOnce = (w: tf.Variable, opt: AdamW): void => {
      const { value, grads } = namedGrads(() => tf.sum(tf.square(tf.sub(w, target))) as tf.Scalar, { w });
      opt.step(grads);
      tf.dispose([value, ...Object.values(grads)]);
    };
    const a = make();
    for (let i = 0; i < 4; i++) stepOnce(a.w, a.opt);
    const state = a.opt.getState();
    const weights = Float32Array.from(a.w.dataSync());
    const b = make();
    b.w.assign(tf.tensor(weights, [2, 2]));
    b.opt.setState(state);
    expect(b.opt.lrs()).toEqual(a.opt.lrs());
    for (let i = 0; i < 3; i++) {
      stepOnce(a.w, a.opt);
      stepOnce(b.w, b.opt);
    }
    expect(Array.from(b.w.dataSync())).toEqual(Array.from(a.w.dataSync()));
    for (const x of [a, b]) {
      x.opt.dispose();
      x.w.dispose();
    }
    target.dispose();
  });

  it('namedGrads keys gradients by parameter name and leaves out parameters the loss does not reach', () => {
    const a = variable([1, 2], [2]);
    const unused = variable([3], [1]);
    const { value, grads } = namedGrads(() => tf.sum(tf.square(a)) as tf.Scalar, { 'block.a': a, 'block.unused': unused });
    expect(Object.keys(grads)).toEqual(['block.a']);
    expect(Array.from(grads['block.a']!.dataSync())).toEqual([2, 4]);
    expect(value.dataSync()[0]).toBe(5);
    const opt = new AdamW([{ name: 'g', lr: 0.1, weightDecay: 0.5, params: { 'block.a': a, 'block.unused': unused } }]);
    opt.step(grads);
    expect(unused.dataSync()[0]).toBe(3); // skipped entirely: not even decayed
    expect(opt.getState().paramSteps).toEqual({ 'block.a': 1 });
    tf.dispose([a, unused, value, ...Object.values(grads)]);
    opt.dispose();
  });

  it('rejects unknown gradients, wrong shapes and mismatched state with the field named', () => {
    const w = variable([1, 2], [2]);
    const opt = new AdamW([{ name: 'g', lr: 0.1, params: { w } }]);
    const g3 = tf.zeros([3]);
    expect(() => opt.step({ q: g3 })).toThrow(InputError);
    expect(() => opt.step({ w: g3 })).toThrow(/w: gradient shape differs from its parameter: expected \[2\], found \[3\]/);
    expect(() => opt.step({ w: g3 })).toThrow(ShapeError);
    const bad = { step: 1, paramSteps: { w: 1 }, moments: { 'w.exp_avg': { dtype: 'float32' as const, shape: [3], data: new Float32Array(3) }, 'w.exp_avg_sq': { dtype: 'float32' as const, shape: [2], data: new Float32Array(2) } } };
    expect(() => opt.setState(bad, 'ckpt/optimizer.safetensors')).toThrow(/ckpt\/optimizer.safetensors: w.exp_avg: optimizer moment shape differs/);
    expect(() => opt.setState({ step: 1, paramSteps: { w: 1 }, moments: {} }, 'x')).toThrow(/x: w.exp_avg: missing optimizer moment/);
    expect(() => new AdamW([{ name: 'a', lr: 0.1, params: { w } }, { name: 'b', lr: 0.1, params: { w } }])).toThrow(/w: parameter name used twice/);
    tf.dispose([w, g3]);
    opt.dispose();
  });

  it('keeps the number of live tensors flat across steps (with clipping)', async () => {
    const w = variable([1, 2, 3, 4, 5, 6], [2, 3]);
    const b = variable([0, 0, 0], [3]);
    const opt = new AdamW([{ name: 'g', lr: 0.1, params: { w, b } }], { maxGradNorm: 0.5, schedule: lrSchedule('cosine', { warmupSteps: 1, totalSteps: 10 }) });
    const x = tf.tensor([[1, 2], [3, 4]]);
    await expectNoTensorLeak(() => {
      const { value, grads } = namedGrads(() => tf.mean(tf.square(tf.add(tf.matMul(x, w), b))) as tf.Scalar, { w, b });
      opt.step(grads);
      tf.dispose([value, ...Object.values(grads)]);
    }, { name: 'AdamW.step', warmup: 2, steps: 3 });
    opt.dispose();
    tf.dispose([w, b, x]);
  });
});
