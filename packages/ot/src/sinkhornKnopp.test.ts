import * as tf from '@tensorflow/tfjs-core';
import fc from 'fast-check';
import { ConfigError } from '@aptp/core';
import { describeBackends, expectClose, expectNoTensorLeak } from '@aptp/core/testing';
import { sinkhornKnopp, sinkhornKnoppTf } from './sinkhornKnopp';
import { marginalsOf } from './matrix';

const FC = { seed: 20250201, numRuns: 50 };

/** The reference formula, literally (plain domain, K×B layout), as an independent float64 oracle. */
function swavReference(S: number[][], eps: number, iters: number): number[][] {
  const B = S.length;
  const K = S[0]!.length;
  let Q = Array.from({ length: K }, (_, k) => Array.from({ length: B }, (_, b) => Math.exp(S[b]![k]! / eps)));
  const total = Q.flat().reduce((s, v) => s + v, 0);
  Q = Q.map((r) => r.map((v) => v / total));
  for (let it = 0; it < iters; it++) {
    Q = Q.map((r) => {
      const s = r.reduce((x, y) => x + y, 0);
      return r.map((v) => v / s / K);
    });
    for (let b = 0; b < B; b++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += Q[k]![b]!;
      for (let k = 0; k < K; k++) Q[k]![b] = Q[k]![b]! / s / B;
    }
  }
  return Array.from({ length: B }, (_, b) => Array.from({ length: K }, (_, k) => Q[k]![b]! * B));
}

const scoresArb = fc
  .tuple(fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 6 }))
  .chain(([B, K]) => fc.array(fc.array(fc.double({ min: -1, max: 1, noNaN: true }), { minLength: K, maxLength: K }), { minLength: B, maxLength: B }));

describe('sinkhornKnopp (host, float64)', () => {
  it('equals the plain-domain reference formula (property)', () => {
    fc.assert(
      fc.property(scoresArb, fc.double({ min: 0.05, max: 2, noNaN: true }), fc.integer({ min: 0, max: 6 }), (S, eps, iters) => {
        const ours = sinkhornKnopp(S, { epsilon: eps, iterations: iters });
        expectClose(ours.data, swavReference(S, eps, iters).flat(), { name: 'Q', rtol: 1e-12 });
      }),
      FC,
    );
  });

  it('rows (samples) sum to 1; with many iterations every code receives B/K (property)', () => {
    fc.assert(
      fc.property(scoresArb, (S) => {
        const B = S.length;
        const K = S[0]!.length;
        const few = sinkhornKnopp(S, { epsilon: 0.5, iterations: 3 });
        expectClose(marginalsOf(few).rowSums, new Array(B).fill(1), { name: 'row sums', atol: 1e-12 });
        const many = sinkhornKnopp(S, { epsilon: 0.5, iterations: 500 });
        expectClose(marginalsOf(many).colSums, new Array(K).fill(B / K), { name: 'code mass', atol: 1e-8 * B });
      }),
      FC,
    );
  });

  it('does not overflow for tiny ε where exp(S/ε) is not representable', () => {
    const S = [
      [1, -1, 0.5],
      [0.9, 1, -0.3],
      [-1, 0.2, 1],
      [1, 0.99, 0.98],
    ];
    const q = sinkhornKnopp(S, { epsilon: 1e-3, iterations: 3 });
    expect(Array.from(q.data).every(Number.isFinite)).toBe(true);
    expectClose(marginalsOf(q).rowSums, [1, 1, 1, 1], { name: 'row sums', atol: 1e-12 });
  });

  it('rejects a non-positive ε and a fractional iteration count', () => {
    expect(() => sinkhornKnopp([[1]], { epsilon: 0 })).toThrow(ConfigError);
    expect(() => sinkhornKnopp([[1]], { iterations: 1.5 })).toThrow(/iterations/);
  });
});

describeBackends('sinkhornKnoppTf', () => {
  it('matches the float64 host version (property, float32 tolerance)', () => {
    fc.assert(
      fc.property(scoresArb, fc.double({ min: 0.02, max: 1, noNaN: true }), (S, eps) => {
        const ref = sinkhornKnopp(S, { epsilon: eps, iterations: 3 });
        const s = tf.tensor2d(S);
        const q = sinkhornKnoppTf(s, { epsilon: eps, iterations: 3 });
        try {
          expectClose(q, ref.data, { name: 'Q', rtol: 2e-5, shape: [S.length, S[0]!.length] });
        } finally {
          tf.dispose([s, q]);
        }
      }),
      { ...FC, numRuns: 20 },
    );
  });

  it('stays finite in float32 for ε = 0.005 (exp(S/ε) would overflow)', () => {
    const s = tf.tensor2d([
      [1, -1],
      [0.5, 1],
      [0.99, 0.98],
    ]);
    const q = sinkhornKnoppTf(s, { epsilon: 0.005, iterations: 3 });
    try {
      expect(Array.from(q.dataSync()).every(Number.isFinite)).toBe(true);
      expectClose(tf.sum(q, 1), [1, 1, 1], { name: 'row sums', atol: 1e-5 });
    } finally {
      tf.dispose([s, q]);
    }
  });

  it('leaks no tensors', async () => {
    const s = tf.tensor2d([
      [0.1, 0.2, 0.3],
      [0.3, -0.2, 0.1],
    ]);
    await expectNoTensorLeak(() => {
      tf.dispose(sinkhornKnoppTf(s));
    });
    s.dispose();
  });
});
