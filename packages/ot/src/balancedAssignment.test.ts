import fc from 'fast-check';
import { InputError } from '@aptp/core';
import { balancedAssignment } from './balancedAssignment';
import { emd } from './emd';

function bruteForce(S: number[][], caps: number[]): number {
  const N = S.length;
  const K = caps.length;
  let best = -Infinity;
  const count = new Array<number>(K).fill(0);
  const rec = (i: number, sum: number): void => {
    if (i === N) {
      best = Math.max(best, sum);
      return;
    }
    for (let k = 0; k < K; k++) {
      if (count[k]! >= caps[k]!) continue;
      count[k] += 1;
      rec(i + 1, sum + S[i]![k]!);
      count[k] -= 1;
    }
  };
  rec(0, 0);
  return best;
}

const problem = fc.tuple(fc.integer({ min: 1, max: 7 }), fc.integer({ min: 1, max: 4 })).chain(([N, K]) =>
  fc.record({
    S: fc.array(fc.array(fc.double({ min: -1, max: 1, noNaN: true }), { minLength: K, maxLength: K }), { minLength: N, maxLength: N }),
    caps: fc.array(fc.integer({ min: 0, max: N }), { minLength: K, maxLength: K }).filter((c) => c.reduce((s, x) => s + x, 0) >= N),
  }),
);

describe('balancedAssignment (capacity-constrained routing)', () => {
  it('is optimal and respects capacities: equals brute force on tiny problems (property)', () => {
    fc.assert(
      fc.property(problem, ({ S, caps }) => {
        const r = balancedAssignment(S, { capacities: caps });
        const counts = new Array<number>(caps.length).fill(0);
        for (const k of r.assignment) counts[k] += 1;
        expect(Array.from(r.counts)).toEqual(counts);
        counts.forEach((c, k) => expect(c).toBeLessThanOrEqual(caps[k]!));
        expect(Math.abs(r.total - bruteForce(S, caps))).toBeLessThan(1e-9);
      }),
      { seed: 31337, numRuns: 50 },
    );
  });

  it('matches exact OT (emd with a slack row) on a 200 × 6 problem, and minimises when maximize = false', () => {
    let seed = 12345;
    const rand = (): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed / 4294967296;
    };
    const N = 200;
    const K = 6;
    const S = Array.from({ length: N }, () => Array.from({ length: K }, () => rand() * 2 - 1));
    const caps = [50, 40, 30, 45, 20, 35];
    const slack = caps.reduce((s, x) => s + x, 0) - N;
    const cost = [...S.map((r) => r.map((v) => -v)), new Array<number>(K).fill(0)];
    const exact = emd([...new Array<number>(N).fill(1), slack], caps, cost);
    const r = balancedAssignment(S, { capacities: caps });
    expect(Math.abs(r.total - -exact.cost)).toBeLessThan(1e-9);
    const rMin = balancedAssignment(S.map((row) => row.map((v) => -v)), { capacities: caps, maximize: false });
    expect(Math.abs(rMin.total - exact.cost)).toBeLessThan(1e-9);
  });

  it('defaults to ⌈N/K⌉ per bin, so a batch that prefers one expert is spread out', () => {
    const S = Array.from({ length: 10 }, (_, i) => [1, 0.5 + 0.01 * i, 0]);
    const r = balancedAssignment(S);
    expect(Math.max(...r.counts)).toBeLessThanOrEqual(4);
    expect(Array.from(r.counts).reduce((s, x) => s + x, 0)).toBe(10);
  });

  it('rejects capacities that cannot hold every item', () => {
    expect(() => balancedAssignment([[1, 0], [0, 1], [1, 1]], { capacities: [1, 1] })).toThrow(InputError);
    expect(() => balancedAssignment([[1, 0]], { capacities: [1.5, 0] })).toThrow(/capacities\[0\]/);
  });
});
