import * as tf from '@tensorflow/tfjs-core';
import fc from 'fast-check';
import { ConfigError, InputError } from '@aptp/core';
import { describeBackends, expectClose, expectNoTensorLeak } from '@aptp/core/testing';
import { sinkhornLog, sinkhornLogTf } from './sinkhornLog';
import { marginalsOf } from './matrix';

const FC = { seed: 4242, numRuns: 50 };

const normalise = (x: number[]): number[] => {
  const s = x.reduce((p, q) => p + q, 0);
  return x.map((v) => v / s);
};

const problemArb = fc.tuple(fc.integer({ min: 1, max: 7 }), fc.integer({ min: 1, max: 7 })).chain(([n, m]) =>
  fc.record({
    a: fc.array(fc.double({ min: 0.05, max: 1, noNaN: true }), { minLength: n, maxLength: n }).map(normalise),
    b: fc.array(fc.double({ min: 0.05, max: 1, noNaN: true }), { minLength: m, maxLength: m }).map(normalise),
    M: fc.array(fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: m, maxLength: m }), { minLength: n, maxLength: n }),
    reg: fc.double({ min: 0.02, max: 2, noNaN: true }),
  }),
);

describe('sinkhornLog (host, float64)', () => {
  it('returns a plan with marginals a and b (property)', () => {
    fc.assert(
      fc.property(problemArb, ({ a, b, M, reg }) => {
        const r = sinkhornLog(a, b, M, reg, { tol: 1e-12, maxIter: 200000 });
        expect(r.converged).toBe(true);
        const { rowSums, colSums } = marginalsOf(r.plan);
        expectClose(rowSums, a, { name: 'row marginal', atol: 1e-12 });
        expectClose(colSums, b, { name: 'column marginal', atol: 1e-11 });
        // The plan has the Gibbs form exp(−M/reg + u_i + v_j).
        for (let i = 0; i < a.length; i++) {
          for (let j = 0; j < b.length; j++) {
            expect(Math.abs(Math.log(r.plan.data[i * b.length + j]!) - (-M[i]![j]! / reg + r.logU[i]! + r.logV[j]!))).toBeLessThan(1e-9);
          }
        }
      }),
      FC,
    );
  });

  it('converges without overflow for reg = 1e-3 (exp(−M/reg) underflows in the plain domain)', () => {
    const M = [
      [0, 1, 0.7, 0.2],
      [0.9, 0.1, 0.4, 0.6],
      [0.3, 0.5, 0, 1],
    ];
    const a = [0.5, 0.3, 0.2];
    const b = [0.25, 0.25, 0.25, 0.25];
    const r = sinkhornLog(a, b, M, 1e-3, { tol: 1e-10, maxIter: 100000 });
    expect(r.converged).toBe(true);
    expect(Array.from(r.plan.data).every(Number.isFinite)).toBe(true);
    expectClose(marginalsOf(r.plan).colSums, b, { name: 'column marginal', atol: 1e-10 });
  });

  it('tends to the independent coupling a·bᵀ for a large reg', () => {
    const r = sinkhornLog([0.2, 0.8], [0.5, 0.25, 0.25], [[0, 1, 2], [2, 1, 0]], 1e6, { tol: 1e-14 });
    expectClose(r.plan.data, [0.1, 0.05, 0.05, 0.4, 0.2, 0.2], { name: 'plan', atol: 1e-6 });
  });

  it('uses uniform marginals when a or b is omitted, and rejects unbalanced marginals and bad options', () => {
    const r = sinkhornLog(undefined, [], [[0, 1], [1, 0]], 0.1, { tol: 1e-13 });
    expectClose(marginalsOf(r.plan).rowSums, [0.5, 0.5], { atol: 1e-13 });
    expect(() => sinkhornLog([0.5, 0.5], [0.2, 0.2], [[0, 1], [1, 0]], 0.1)).toThrow(InputError);
    expect(() => sinkhornLog(undefined, undefined, [[0]], 0)).toThrow(ConfigError);
    expect(() => sinkhornLog([1], [1], [[NaN]], 1)).toThrow(/M: expected finite entries/);
  });
});

describeBackends('sinkhornLogTf', () => {
  it('matches the float64 solver (float32 tolerance) and stays finite for reg = 1e-3', async () => {
    const M = [
      [0, 1, 0.7, 0.2],
      [0.9, 0.1, 0.4, 0.6],
      [0.3, 0.5, 0, 1],
    ];
    const a = [0.5, 0.3, 0.2];
    const b = [0.1, 0.4, 0.3, 0.2];
    // float32 resolves exponents of size max(M)/reg only to ~6e-8·max(M)/reg, which bounds the reachable marginal error.
    for (const [reg, tol, atol] of [[0.5, 1e-6, 2e-5], [0.05, 1e-6, 2e-5], [1e-3, 2e-5, 1e-4]] as const) {
      const ref = sinkhornLog(a, b, M, reg, { tol: 1e-12, maxIter: 100000 });
      const [at, bt, Mt] = [tf.tensor1d(a), tf.tensor1d(b), tf.tensor2d(M)];
      const r = await sinkhornLogTf(at, bt, Mt, reg, { tol, maxIter: 5000 });
      try {
        expect(r.converged).toBe(true);
        expect(Array.from(r.plan.dataSync()).every(Number.isFinite)).toBe(true);
        expectClose(r.plan, ref.plan.data, { name: `plan reg ${reg}`, atol });
      } finally {
        tf.dispose([at, bt, Mt, r.plan, r.logU, r.logV]);
      }
    }
  });

  it('leaks no tensors', async () => {
    const [at, bt, Mt] = [tf.tensor1d([0.5, 0.5]), tf.tensor1d([0.25, 0.75]), tf.tensor2d([[0, 1], [1, 0]])];
    await expectNoTensorLeak(async () => {
      const r = await sinkhornLogTf(at, bt, Mt, 0.1, { maxIter: 25 });
      tf.dispose([r.plan, r.logU, r.logV]);
    });
    tf.dispose([at, bt, Mt]);
  });
});
