import * as tf from '@tensorflow/tfjs-core';
import { InputError } from '../errors';
import { Rng } from '../rng/rng';
import { describeBackends } from '../testing/backends';
import { expectClose } from '../testing/expectClose';
import { gradCheck } from '../testing/gradCheck';
import { registerEagerGradients } from '../ops/eager/gradients';
import { expectNoTensorLeak } from '../testing/leaks';
import { DDPMScheduler } from './ddpm';

const SD21 = { betaSchedule: 'scaled_linear', betaStart: 0.00085, betaEnd: 0.012, predictionType: 'v_prediction' } as const;
const T = [0, 10, 500, 999];

describeBackends('DDPMScheduler training helpers', () => {
  const s = new DDPMScheduler(SD21);
  const x0 = Rng.forKey(1, 'x0').normalTensor([4, 2, 3, 3]);
  const eps = Rng.forKey(1, 'eps').normalTensor([4, 2, 3, 3]);
  afterAll(() => tf.dispose([x0, eps]));

  it('addNoise and getVelocity follow DDPM eq. 4 and v = √ᾱε − √(1−ᾱ)x0 per batch item (float64 reference)', () => {
    tf.tidy(() => {
      const xt = s.addNoise(x0, eps, T);
      const v = s.getVelocity(x0, eps, T);
      const xs = x0.arraySync() as number[][][][];
      const es = eps.arraySync() as number[][][][];
      const refX = xs.map((b, i) => b.map((c, j) => c.map((r, k) => r.map((x, l) => Math.sqrt(s.alphasCumprod[T[i]!]!) * x + Math.sqrt(1 - s.alphasCumprod[T[i]!]!) * es[i]![j]![k]![l]!))));
      const refV = xs.map((b, i) => b.map((c, j) => c.map((r, k) => r.map((x, l) => Math.sqrt(s.alphasCumprod[T[i]!]!) * es[i]![j]![k]![l]! - Math.sqrt(1 - s.alphasCumprod[T[i]!]!) * x))));
      expectClose(xt, refX.flat(3), { name: 'addNoise', rtol: 1e-6 });
      expectClose(v, refV.flat(3), { name: 'getVelocity', rtol: 1e-6 });
      // x0 = √ᾱ x_t − √(1−ᾱ) v (the identity DDIM's v-prediction step relies on)
      const back = tf.sub(tf.mul(tf.tensor(T.map((t) => Math.sqrt(s.alphasCumprod[t]!)), [4, 1, 1, 1]), xt), tf.mul(tf.tensor(T.map((t) => Math.sqrt(1 - s.alphasCumprod[t]!)), [4, 1, 1, 1]), v));
      expectClose(back, x0, { name: 'x0 from (x_t, v)', rtol: 1e-5 });
    });
  });

  it('a tensor of timesteps gives the same values as a host list', () => {
    tf.tidy(() => {
      const tt = tf.tensor1d(T, 'int32');
      expectClose(s.addNoise(x0, eps, tt), s.addNoise(x0, eps, T), { name: 'addNoise', atol: 0 });
      expectClose(s.getVelocity(x0, eps, tt), s.getVelocity(x0, eps, Int32Array.from(T)), { name: 'getVelocity', atol: 0 });
      expectClose(s.snr(tt), s.snr(T), { name: 'snr', rtol: 1e-6 });
    });
  });

  it('snr = ᾱ/(1−ᾱ), decreasing in t', () => {
    const snr = s.snrValues(T);
    T.forEach((t, i) => expect(Math.abs(snr[i]! / (s.alphasCumprod[t]! / (1 - s.alphasCumprod[t]!)) - 1)).toBeLessThan(1e-6));
    for (let i = 1; i < T.length; i++) expect(snr[i]!).toBeLessThan(snr[i - 1]!);
  });

  it('getTarget follows prediction_type (ε, v, x0)', () => {
    tf.tidy(() => {
      expectClose(new DDPMScheduler({ ...SD21, predictionType: 'epsilon' }).getTarget(x0, eps, T), eps, { name: 'epsilon target', atol: 0 });
      expectClose(s.getTarget(x0, eps, T), s.getVelocity(x0, eps, T), { name: 'v target', atol: 0 });
      expectClose(new DDPMScheduler({ ...SD21, predictionType: 'sample' }).getTarget(x0, eps, T), x0, { name: 'sample target', atol: 0 });
    });
  });

  it('predictOriginalSample inverts getTarget at x_t for every prediction_type, per batch item', () => {
    for (const predictionType of ['epsilon', 'v_prediction', 'sample'] as const) {
      const sch = new DDPMScheduler({ ...SD21, predictionType });
      tf.tidy(() => {
        const xt = sch.addNoise(x0, eps, T);
        const back = sch.predictOriginalSample(sch.getTarget(x0, eps, T), xt, T);
        expectClose(back, x0, { name: `${predictionType}: x̂0 of the exact target`, rtol: 1e-4, atol: 1e-4 });
        // a tensor of timesteps gives the same values
        expectClose(sch.predictOriginalSample(sch.getTarget(x0, eps, T), xt, tf.tensor1d(T, 'int32')), back, { name: `${predictionType}: tensor timesteps`, atol: 0 });
      });
    }
    tf.tidy(() => expect(() => s.predictOriginalSample(tf.zeros([4, 2, 3, 2]), x0, T)).toThrow(/modelOutput/));
  });

  it('is differentiable in the samples and the noise (finite differences)', () => {
    registerEagerGradients(); // tfjs-core registers no gradients by itself (see ops/eager/gradients.ts)
    const w = Rng.forKey(2, 'w').normalTensor([4, 2, 3, 3]);
    gradCheck((a, e) => tf.sum(tf.mul(w, tf.add(s.addNoise(a, e, T), tf.square(s.getVelocity(a, e, T))))) as tf.Scalar, [x0, eps], { name: 'ddpm helpers' });
    w.dispose();
  });

  it('rejects out-of-range timesteps and a wrong count', () => {
    expect(() => s.addNoise(x0, eps, [0, 1, 2, 1000])).toThrow(InputError);
    expect(() => s.addNoise(x0, eps, [0, 1])).toThrow(/one timestep per batch item/);
    expect(() => s.getVelocity(x0, tf.zeros([1]), T)).toThrow(/shapes differ/);
  });

  it('leaks no tensors', async () => {
    const tt = tf.tensor1d(T, 'int32');
    await expectNoTensorLeak(() => {
      tf.dispose([s.addNoise(x0, eps, T), s.getVelocity(x0, eps, tt), s.getTarget(x0, eps, T), s.snr(tt), s.snr(T)]);
    }, { name: 'ddpm helpers' });
    tt.dispose();
  });
});
