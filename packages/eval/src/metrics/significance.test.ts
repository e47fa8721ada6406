import { InputError } from '@aptp/core';
import { fisherExactTest, permutationTest } from './significance';

describe('fisherExactTest (two-sided, as scipy.stats.fisher_exact)', () => {
  it('matches scipy on small and large tables', () => {
    // values from scipy 1.17 fisher_exact([[hA, nA − hA], [hB, nB − hB]]).pvalue
    expect(fisherExactTest(3, 4, 1, 4)).toBeCloseTo(0.48571428571428565, 12);
    expect(fisherExactTest(8, 10, 1, 6)).toBeCloseTo(0.034965034965034975, 12);
    expect(fisherExactTest(40, 128, 22, 128)).toBeCloseTo(0.01275542154493002, 12);
    expect(fisherExactTest(1, 128, 0, 128)).toBeCloseTo(1, 12);
    expect(fisherExactTest(17, 24, 16, 24)).toBeCloseTo(1, 12);
    expect(fisherExactTest(0, 5, 0, 7)).toBeCloseTo(1, 12);
  });

  it('is symmetric in the groups and in hits vs misses', () => {
    for (const [a, n, b, m] of [[5, 20, 12, 25], [0, 9, 6, 9], [7, 7, 2, 11]] as const) {
      const p = fisherExactTest(a, n, b, m);
      expect(p).toBeGreaterThan(0);
      expect(p).toBeLessThanOrEqual(1);
      expect(fisherExactTest(b, m, a, n)).toBeCloseTo(p, 12);
      expect(fisherExactTest(n - a, n, m - b, m)).toBeCloseTo(p, 12);
    }
  });

  it('rejects impossible counts, naming the group', () => {
    expect(() => fisherExactTest(5, 4, 1, 4)).toThrow(InputError);
    expect(() => fisherExactTest(1, 4, 1.5, 4)).toThrow(/group B/);
  });
});

describe('permutationTest (difference in means)', () => {
  it('agrees with the exact enumeration on a tiny sample', () => {
    // {1,2,3} vs {4,5,6}: of the C(6,3) = 20 splits only the observed one and its mirror are as extreme → p = 0.1
    expect(permutationTest([1, 2, 3], [4, 5, 6], { permutations: 20000, seed: 3 })).toBeCloseTo(0.1, 2);
  });

  it('is large for exchangeable groups, small for separated ones, never 0, and deterministic per seed', () => {
    const same = permutationTest([1, 4, 2, 5, 3], [2, 5, 1, 4, 3], { permutations: 999 });
    expect(same).toBeGreaterThan(0.9);
    const apart = Array.from({ length: 30 }, (_, i) => i);
    const p = permutationTest(apart.map((x) => x + 100), apart, { permutations: 999 });
    expect(p).toBe(1 / 1000);
    expect(permutationTest([1, 2, 3, 9], [4, 5, 6], { seed: 7, permutations: 500 })).toBe(permutationTest([1, 2, 3, 9], [4, 5, 6], { seed: 7, permutations: 500 }));
    expect(() => permutationTest([], [1])).toThrow(InputError);
  });
});
