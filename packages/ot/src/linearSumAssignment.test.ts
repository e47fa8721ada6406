import fc from 'fast-check';
import { linearSumAssignment, assignmentMatrix } from './linearSumAssignment';

function bestByBruteForce(C: number[][], maximize: boolean): number {
  const n = C.length;
  const m = C[0]!.length;
  const k = Math.min(n, m);
  let best = maximize ? -Infinity : Infinity;
  const usedR = new Array<boolean>(n).fill(false);
  const usedC = new Array<boolean>(m).fill(false);
  // Choose k (row, column) pairs with distinct rows and columns: rows taken in increasing order.
  const rec = (startRow: number, picked: number, sum: number): void => {
    if (picked === k) {
      best = maximize ? Math.max(best, sum) : Math.min(best, sum);
      return;
    }
    for (let i = startRow; i < n; i++) {
      if (usedR[i]) continue;
      usedR[i] = true;
      for (let j = 0; j < m; j++) {
        if (usedC[j]) continue;
        usedC[j] = true;
        rec(i + 1, picked + 1, sum + C[i]![j]!);
        usedC[j] = false;
      }
      usedR[i] = false;
    }
  };
  rec(0, 0, 0);
  return best;
}

describe('linearSumAssignment (Hungarian)', () => {
  it('equals brute force on square and rectangular problems, minimising and maximising (property)', () => {
    const arb = fc
      .tuple(fc.integer({ min: 1, max: 6 }), fc.integer({ min: 1, max: 6 }))
      .chain(([n, m]) => fc.array(fc.array(fc.double({ min: -10, max: 10, noNaN: true }), { minLength: m, maxLength: m }), { minLength: n, maxLength: n }));
    fc.assert(
      fc.property(arb, fc.boolean(), (C, maximize) => {
        const r = linearSumAssignment(C, { maximize });
        const k = Math.min(C.length, C[0]!.length);
        expect(r.rowInd.length).toBe(k);
        expect(new Set(r.rowInd).size).toBe(k);
        expect(new Set(r.colInd).size).toBe(k);
        expect(Array.from(r.rowInd)).toEqual(Array.from(r.rowInd).sort((x, y) => x - y));
        expect(Math.abs(r.total - bestByBruteForce(C, maximize))).toBeLessThan(1e-9);
      }),
      { seed: 99, numRuns: 50 },
    );
  });

  it('returns the permutation for a known case (as SciPy)', () => {
    const C = [
      [4, 1, 3],
      [2, 0, 5],
      [3, 2, 2],
    ];
    const r = linearSumAssignment(C);
    expect(Array.from(r.colInd)).toEqual([1, 0, 2]);
    expect(r.total).toBe(5);
    expect(Array.from(assignmentMatrix(r, 3, 3).data)).toEqual([0, 1, 0, 1, 0, 0, 0, 0, 1]);
  });
});
