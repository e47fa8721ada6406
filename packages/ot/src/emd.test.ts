import fc from 'fast-check';
import { ShapeError } from '@aptp/core';
import { expectClose } from '@aptp/core/testing';
import { emd } from './emd';
import { linearSumAssignment } from './linearSumAssignment';
import { marginalsOf } from './matrix';

const FC = { seed: 777, numRuns: 50 };

/** Every non-negative integer matrix with the given row and column sums (tiny problems only). */
function integerPlans(a: number[], b: number[]): number[][][] {
  const n = a.length;
  const m = b.length;
  const out: number[][][] = [];
  const plan = Array.from({ length: n }, () => new Array<number>(m).fill(0));
  const colLeft = b.slice();
  const fillRow = (i: number): void => {
    if (i === n) {
      if (colLeft.every((c) => c === 0)) out.push(plan.map((r) => r.slice()));
      return;
    }
    const rec = (j: number, left: number): void => {
      if (j === m - 1) {
        if (left > colLeft[j]!) return;
        plan[i]![j] = left;
        colLeft[j] -= left;
        fillRow(i + 1);
        colLeft[j] += left;
        return;
      }
      for (let x = 0; x <= Math.min(left, colLeft[j]!); x++) {
        plan[i]![j] = x;
        colLeft[j] -= x;
        rec(j + 1, left - x);
        colLeft[j] += x;
      }
    };
    rec(0, a[i]!);
  };
  fillRow(0);
  return out;
}

const integerProblem = fc.tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 3 })).chain(([n, m]) =>
  fc
    .record({
      a: fc.array(fc.integer({ min: 0, max: 3 }), { minLength: n, maxLength: n }),
      M: fc.array(fc.array(fc.integer({ min: -5, max: 9 }), { minLength: m, maxLength: m }), { minLength: n, maxLength: n }),
      cut: fc.array(fc.nat(), { minLength: m, maxLength: m }),
    })
    .filter(({ a }) => a.some((x) => x > 0))
    .map(({ a, M, cut }) => {
      // Split the same total mass over the columns.
      const total = a.reduce((s, x) => s + x, 0);
      const b = new Array<number>(m).fill(0);
      for (let k = 0; k < total; k++) b[cut[k % m]! % m] += 1;
      return { a, b, M };
    }),
);

describe('emd (exact OT)', () => {
  it('is optimal: equals brute force over all integer plans of tiny problems (property)', () => {
    fc.assert(
      fc.property(integerProblem, ({ a, b, M }) => {
        const plans = integerPlans(a, b);
        const best = Math.min(...plans.map((p) => p.reduce((s, r, i) => s + r.reduce((t, x, j) => t + x * M[i]![j]!, 0), 0)));
        const r = emd(a, b, M);
        expect(Math.abs(r.cost - best)).toBeLessThan(1e-9);
        const { rowSums, colSums } = marginalsOf(r.plan);
        expectClose(rowSums, a, { atol: 1e-12 });
        expectClose(colSums, b, { atol: 1e-12 });
      }),
      FC,
    );
  });

  it('returns a dual certificate (feasible duals, complementary slackness, zero gap) on random real problems (property)', () => {
    const arb = fc.tuple(fc.integer({ min: 1, max: 12 }), fc.integer({ min: 1, max: 12 })).chain(([n, m]) =>
      fc.record({
        a: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: n, maxLength: n }).filter((x) => x.some((v) => v > 1e-3)),
        b: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: m, maxLength: m }).filter((x) => x.some((v) => v > 1e-3)),
        M: fc.array(fc.array(fc.double({ min: -1, max: 1, noNaN: true }), { minLength: m, maxLength: m }), { minLength: n, maxLength: n }),
      }),
    );
    fc.assert(
      fc.property(arb, ({ a, b, M }) => {
        const r = emd(a, b, M);
        const n = a.length;
        const m = b.length;
        const sa = a.reduce((s, x) => s + x, 0);
        const sb = b.reduce((s, x) => s + x, 0);
        const bs = b.map((x) => (x * sa) / sb); // POT rescales b to a's mass
        const { rowSums, colSums } = marginalsOf(r.plan);
        expectClose(rowSums, a, { atol: 1e-12 });
        expectClose(colSums, bs, { atol: 1e-12 });
        let support = 0;
        for (let i = 0; i < n; i++) {
          for (let j = 0; j < m; j++) {
            const slack = M[i]![j]! - r.u[i]! - r.v[j]!;
            expect(slack).toBeGreaterThan(-1e-12);
            if (r.plan.data[i * m + j]! > 0) {
              support++;
              expect(Math.abs(slack)).toBeLessThan(1e-12);
            }
          }
        }
        expect(support).toBeLessThanOrEqual(n + m - 1); // a vertex of the transport polytope
        const dual = a.reduce((s, x, i) => s + x * r.u[i]!, 0) + bs.reduce((s, x, j) => s + x * r.v[j]!, 0);
        expect(Math.abs(dual - r.cost)).toBeLessThan(1e-12);
      }),
      FC,
    );
  });

  it('with uniform square marginals equals the optimal permutation (Hungarian) / n', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 9 }).chain((n) => fc.array(fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { minLength: n, maxLength: n }), { minLength: n, maxLength: n })),
        (M) => {
          const n = M.length;
          const r = emd(undefined, undefined, M);
          expect(Math.abs(r.cost - linearSumAssignment(M).total / n)).toBeLessThan(1e-12);
        },
      ),
      FC,
    );
  });

  it('handles the degenerate uniform case (partial sums coincide) and names bad inputs', () => {
    const M = [
      [0, 1],
      [1, 0],
      [0.5, 0.5],
      [0.2, 0.9],
    ];
    const r = emd([0.25, 0.25, 0.25, 0.25], [0.5, 0.5], M);
    expect(r.cost).toBeCloseTo(0.25 * (0 + 0 + 0.5 + 0.2), 14);
    expect(() => emd([1, 0], [1], [[0, 1]])).toThrow(ShapeError);
    expect(() => emd([1], [1], [[0]], { maxAugmentations: 0 })).toThrow(/maxAugmentations/);
  });
});
