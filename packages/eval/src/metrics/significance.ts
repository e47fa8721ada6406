import { InputError, Rng } from '@aptp/core';

/**
 * Significance of the claim comparisons — how likely is a difference at least this large when the two groups do not
 * really differ? Two small exact/resampling tests, so a "holds" resting on 1 image of 128 reads as what it is.
 */

/** log(k!) for k = 0 … n. */
function logFactorials(n: number): Float64Array {
  const out = new Float64Array(n + 1);
  for (let k = 1; k <= n; k++) out[k] = out[k - 1]! + Math.log(k);
  return out;
}

/**
 * Fisher's exact test, two-sided, of two proportions `hitsA / totalA` vs `hitsB / totalB` (a 2×2 table): the
 * probability, under the hypergeometric law with all margins fixed, of a table as unlikely as or less likely than the
 * observed one (scipy.stats.fisher_exact's two-sided p).
 */
export function fisherExactTest(hitsA: number, totalA: number, hitsB: number, totalB: number): number {
  for (const [name, hits, total] of [['A', hitsA, totalA], ['B', hitsB, totalB]] as const) {
    if (!(Number.isInteger(hits) && Number.isInteger(total) && hits >= 0 && total >= hits)) {
      throw new InputError('Fisher test needs integer counts with 0 ≤ hits ≤ total', { code: 'E_VALUE', field: `group ${name}`, expected: '0 ≤ hits ≤ total', found: `${hits}/${total}` });
    }
  }
  const n = totalA + totalB;
  const hits = hitsA + hitsB;
  const lf = logFactorials(n);
  // P(x hits in A) = C(hits, x) C(n − hits, totalA − x) / C(n, totalA)
  const logP = (x: number): number =>
    lf[hits]! - lf[x]! - lf[hits - x]! + lf[n - hits]! - lf[totalA - x]! - lf[n - hits - totalA + x]! - (lf[n]! - lf[totalA]! - lf[n - totalA]!);
  const observed = logP(hitsA);
  let p = 0;
  for (let x = Math.max(0, totalA - (n - hits)); x <= Math.min(hits, totalA); x++) {
    const lp = logP(x);
    if (lp <= observed + 1e-7) p += Math.exp(lp); // relative tolerance for ties, as scipy
  }
  return Math.min(1, p);
}

/**
 * Two-sided permutation test of a difference in means: the share of `permutations` random relabellings of the pooled
 * values whose |mean(A) − mean(B)| is at least the observed one, with the +1 correction ((1 + count) / (1 + N)), so it
 * is never 0. Deterministic for `seed`.
 */
export function permutationTest(a: readonly number[], b: readonly number[], options: { permutations?: number; seed?: number } = {}): number {
  const permutations = options.permutations ?? 9999;
  if (a.length === 0 || b.length === 0) throw new InputError('permutation test needs two non-empty groups', { code: 'E_VALUE', expected: 'at least one value per group', found: `${a.length} and ${b.length}` });
  const pooled = Float64Array.from([...a, ...b]);
  const total = pooled.reduce((s, x) => s + x, 0);
  const gap = (sumA: number): number => Math.abs(sumA / a.length - (total - sumA) / b.length);
  const observed = gap(a.reduce((s, x) => s + x, 0));
  const tol = 1e-12 * Math.max(1, Math.abs(observed));
  const rng = Rng.forKey(options.seed ?? 0, 'permutation-test');
  let count = 0;
  for (let i = 0; i < permutations; i++) {
    // partial Fisher–Yates: the first a.length slots become group A
    let sumA = 0;
    for (let j = 0; j < a.length; j++) {
      const k = j + rng.nextInt(pooled.length - j);
      const t = pooled[j]!;
      pooled[j] = pooled[k]!;
      pooled[k] = t;
      sumA += pooled[j]!;
    }
    if (gap(sumA) >= observed - tol) count++;
  }
  return (1 + count) / (1 + permutations);
}
