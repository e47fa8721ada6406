import { Rng } from '@aptp/core';
import { expectClose } from '@aptp/core/testing';
import fc from 'fast-check';
import { choleskySemidefinite, symmetricEigenvalues } from './symEig';
import { frechetDistance, gaussianStats } from './frechet';
import { Float64Linalg } from './matmul64';

function randomSymmetric(rng: Rng, n: number): Float64Array {
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j <= i; j++) {
      const v = rng.nextNormal();
      a[i * n + j] = v;
      a[j * n + i] = v;
    }
  return a;
}

/** x·xᵀ/k for x [n, k]: PSD of rank min(n, k). */
function randomPsd(rng: Rng, n: number, k: number): Float64Array {
  const x = Float64Array.from(rng.normal(n * k));
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += x[i * k + p]! * x[j * k + p]!;
      a[i * n + j] = s / k;
    }
  return a;
}

describe('symmetricEigenvalues', () => {
  test('known spectrum: tridiagonal [-1, 2, -1] has 2 − 2cos(kπ/(n+1))', () => {
    const n = 40;
    const a = new Float64Array(n * n);
    for (let i = 0; i < n; i++) {
      a[i * n + i] = 2;
      if (i > 0) a[i * n + i - 1] = a[(i - 1) * n + i] = -1;
    }
    const expected = Array.from({ length: n }, (_, k) => 2 - 2 * Math.cos(((k + 1) * Math.PI) / (n + 1))).sort((x, y) => x - y);
    expectClose(symmetricEigenvalues(a, n), expected, { name: 'eig', atol: 1e-13 });
  });

  test('dense spectrum under an orthogonal similarity (Householder reflector): eig(Q·D·Qᵀ) = D', () => {
    const rng = Rng.forKey(1, 'symEig', 'similarity');
    const n = 33;
    const d = Array.from({ length: n }, (_, i) => (i % 3 === 0 ? -1 : 1) * (i + 1) * 0.37);
    const v = Float64Array.from(rng.normal(n));
    const vv = v.reduce((s, x) => s + x * x, 0);
    // Q = I − 2vvᵀ/vᵀv; A = Q D Q
    const q = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) q[i * n + j] = (i === j ? 1 : 0) - (2 * v[i]! * v[j]!) / vv;
    const a = new Float64Array(n * n);
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let k = 0; k < n; k++) s += q[i * n + k]! * d[k]! * q[j * n + k]!;
        a[i * n + j] = s;
      }
    expectClose(symmetricEigenvalues(a, n), [...d].sort((x, y) => x - y), { name: 'eig', atol: 1e-12 });
  });

  test('property: Σλ = tr A and Σλ² = ‖A‖²_F for random symmetric matrices (fast-check, seed 7)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 24 }), fc.integer({ min: 0, max: 1e6 }), (n, seed) => {
        const a = randomSymmetric(Rng.forKey(seed, 'prop'), n);
        const eig = symmetricEigenvalues(a, n);
        let tr = 0;
        let fro = 0;
        for (let i = 0; i < n; i++) tr += a[i * n + i]!;
        for (const x of a) fro += x * x;
        const s1 = eig.reduce((s, x) => s + x, 0);
        const s2 = eig.reduce((s, x) => s + x * x, 0);
        for (let i = 1; i < n; i++) if (eig[i]! < eig[i - 1]!) return false;
        return Math.abs(s1 - tr) <= 1e-10 * Math.max(1, Math.abs(tr)) + 1e-10 * n && Math.abs(s2 - fro) <= 1e-10 * Math.max(1, fro);
      }),
      { seed: 7, numRuns: 50 },
    );
  });

  test('rejects a non-square buffer', () => {
    expect(() => symmetricEigenvalues(new Float64Array(5), 2)).toThrow(/expects a flat \[n, n\] matrix/);
  });
});

describe('choleskySemidefinite', () => {
  const mulLLt = (l: Float64Array, n: number): Float64Array => {
    const a = new Float64Array(n * n);
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let k = 0; k < n; k++) s += l[i * n + k]! * l[j * n + k]!;
        a[i * n + j] = s;
      }
    return a;
  };

  test('positive definite: L·Lᵀ = A, L lower triangular with a positive diagonal', () => {
    const n = 20;
    const a = randomPsd(Rng.forKey(2, 'chol'), n, 50);
    const { l, zeroPivots } = choleskySemidefinite(a, n);
    expect(zeroPivots).toBe(0);
    for (let i = 0; i < n; i++) {
      expect(l[i * n + i]).toBeGreaterThan(0);
      for (let j = i + 1; j < n; j++) expect(l[i * n + j]).toBe(0);
    }
    expectClose(mulLLt(l, n), a, { name: 'LLᵀ', atol: 1e-13 });
  });

  test('rank-deficient PSD (rank 6 of 15): zero pivots, still A = L·Lᵀ', () => {
    const n = 15;
    const a = randomPsd(Rng.forKey(3, 'chol'), n, 6);
    const { l, zeroPivots } = choleskySemidefinite(a, n);
    expect(zeroPivots).toBe(n - 6);
    expectClose(mulLLt(l, n), a, { name: 'LLᵀ', atol: 1e-10 });
  });
});

describe('frechetDistance (properties)', () => {
  test('identical statistics give 0; fewer samples than dims (singular Σ) match the full-rank factorisation order', async () => {
    const linalg = new Float64Linalg(1);
    try {
      const rng = Rng.forKey(4, 'fid');
      const dim = 24;
      const full = { data: rng.normal(300 * dim), rows: 300, dim };
      const few = { data: Float32Array.from(rng.normal(10 * dim), (v) => v * 0.5 + 0.2), rows: 10, dim };
      const sFull = await gaussianStats(full, { linalg, chunkRows: 77 });
      const sFew = await gaussianStats(few, { linalg });
      const self = await frechetDistance(sFull, sFull, { linalg });
      expect(Math.abs(self.fid)).toBeLessThan(1e-10);
      // Σfew has rank 9: factorising it (zero pivots) and factorising Σfull must give the same trace.
      const a = await frechetDistance(sFew, sFull, { linalg });
      const b = await frechetDistance(sFull, sFew, { linalg });
      expect(a.zeroPivots).toBe(dim - 9);
      expect(b.zeroPivots).toBe(0);
      // Near-zero eigenvalues (round-off ~1e-16) enter as √λ ~ 1e-8 each: singular cases agree to ~√eps, not eps.
      expectClose([a.fid], [b.fid], { name: 'fid order', rtol: 1e-6 });
      expect(a.fid).toBeGreaterThan(0);
      // Scaling every feature by c scales the distance by c².
      const scaled = await gaussianStats({ data: Float64Array.from(full.data, (v) => 3 * v), rows: 300, dim }, { linalg });
      const scaledFew = await gaussianStats({ data: Float64Array.from(few.data, (v) => 3 * v), rows: 10, dim }, { linalg });
      expectClose([(await frechetDistance(scaledFew, scaled, { linalg })).fid], [9 * a.fid], { name: 'fid scaling', rtol: 1e-9 });
    } finally {
      await linalg.dispose();
    }
  });
});
