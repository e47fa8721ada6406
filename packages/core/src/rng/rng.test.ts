import * as tf from '@tensorflow/tfjs-core';
import { Rng } from './rng';
import { describeBackends } from '../testing/backends';

describe('Rng', () => {
  it('is deterministic per seed and key, and keys give independent streams', () => {
    const a = Rng.forKey(43, 'noise', 0).normal(8);
    const b = Rng.forKey(43, 'noise', 0).normal(8);
    const c = Rng.forKey(43, 'noise', 1).normal(8);
    const d = Rng.forKey(44, 'noise', 0).normal(8);
    expect(Array.from(a)).toEqual(Array.from(b));
    expect(Array.from(a)).not.toEqual(Array.from(c));
    expect(Array.from(a)).not.toEqual(Array.from(d));
  });

  it('has the right moments (uniform, normal, Gumbel) on 200k samples', () => {
    const r = Rng.forKey(1);
    const n = 200000;
    const mean = (x: Float32Array) => x.reduce((s, v) => s + v, 0) / x.length;
    const variance = (x: Float32Array) => { const m = mean(x); return x.reduce((s, v) => s + (v - m) ** 2, 0) / x.length; };
    const u = r.uniform(n);
    expect(Math.abs(mean(u) - 0.5)).toBeLessThan(0.005);
    expect(Math.abs(variance(u) - 1 / 12)).toBeLessThan(0.002);
    expect(u.reduce((m, v) => Math.min(m, v), 1)).toBeGreaterThanOrEqual(0);
    expect(u.reduce((m, v) => Math.max(m, v), 0)).toBeLessThan(1);
    const z = r.normal(n);
    expect(Math.abs(mean(z))).toBeLessThan(0.01);
    expect(Math.abs(variance(z) - 1)).toBeLessThan(0.02);
    const g = r.gumbel(n);
    expect(Math.abs(mean(g) - 0.5772156649)).toBeLessThan(0.01); // Euler–Mascheroni
    expect(Math.abs(variance(g) - Math.PI ** 2 / 6)).toBeLessThan(0.05);
  });

  it('saves and restores its state mid-stream', () => {
    const r = Rng.forKey(7);
    r.normal(3); // leaves a spare Box–Muller value
    const s = r.getState();
    const x = r.normal(5);
    const y = Rng.fromState(JSON.parse(JSON.stringify(s))).normal(5);
    expect(Array.from(y)).toEqual(Array.from(x));
  });

  it('permutation is a permutation and seeded', () => {
    const p = Rng.forKey(3).permutation(100);
    expect([...p].sort((a, b) => a - b)).toEqual(Array.from({ length: 100 }, (_, i) => i));
    expect(Rng.forKey(3).permutation(100)).toEqual(p);
  });
});

describeBackends('Rng tensors', () => {
  it('gives the same tensor values on every backend', () => {
    const t = Rng.forKey(43, 'x').normalTensor([3, 4]);
    expect(Array.from(t.dataSync())).toEqual(Array.from(Rng.forKey(43, 'x').normal(12)));
    tf.dispose(t);
  });
});
