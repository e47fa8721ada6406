/**
 * Dense float64 linear algebra for the Fréchet distance (APTP.md §8.2, STACK.md §7), on flat row-major
 * `Float64Array`s: eigenvalues of a symmetric matrix (Householder tridiagonalisation + implicit QL, values only) and
 * a semidefinite Cholesky factor. Both read only the lower triangle and never allocate n² beyond one working copy.
 */
import { NumericError, ShapeError } from '@aptp/core';

function checkSquare(a: Float64Array, n: number, what: string): void {
  if (!Number.isInteger(n) || n < 0 || a.length !== n * n) {
    throw new ShapeError(`${what} expects a flat [n, n] matrix`, { field: 'a', expected: `${n}x${n} = ${n * n} values`, found: a.length });
  }
}

/**
 * Eigenvalues of the symmetric matrix `a` ([n, n], only the lower triangle is read), sorted ascending.
 * Householder reduction to tridiagonal form (symmetric rank-2 updates on the lower triangle, row-contiguous), then
 * the implicit QL iteration with Wilkinson shifts. Cost ≈ 4/3·n³ flops.
 */
export function symmetricEigenvalues(a: Float64Array, n: number): Float64Array {
  checkSquare(a, n, 'symmetricEigenvalues');
  const w = Float64Array.from(a); // working copy; lower triangle is reduced in place
  const d = new Float64Array(n);
  const e = new Float64Array(n);
  // Householder vector u and A·u (then q) of the current step, and of the next one (fused pass, see below).
  let u = new Float64Array(n);
  let p = new Float64Array(n);
  let uNext = new Float64Array(n);
  let pNext = new Float64Array(n);

  /** Householder vector of step i from row i (columns 0..i−1) into `into`; sets e[i]; returns h (0: no transform). */
  const prepare = (i: number, into: Float64Array): number => {
    const l = i - 1;
    const rowI = i * n;
    let scale = 0;
    for (let k = 0; k <= l; k++) scale += Math.abs(w[rowI + k]!);
    if (l === 0 || scale === 0) {
      e[i] = w[rowI + l]!;
      return 0;
    }
    let h = 0;
    for (let k = 0; k <= l; k++) {
      const v = w[rowI + k]! / scale;
      into[k] = v;
      h += v * v;
    }
    const f = into[l]!;
    const g = f >= 0 ? -Math.sqrt(h) : Math.sqrt(h);
    e[i] = scale * g;
    h -= f * g;
    into[l] = f - g;
    return h;
  };
  /** out[0..l] = A[0..l, 0..l]·v from the lower triangle (row-contiguous). */
  const symv = (l: number, v: Float64Array, out: Float64Array): void => {
    out.fill(0, 0, l + 1);
    for (let j = 0; j <= l; j++) {
      const row = j * n;
      const vj = v[j]!;
      let s = 0;
      for (let k = 0; k < j; k++) {
        const ajk = w[row + k]!;
        s += ajk * v[k]!;
        out[k] += ajk * vj;
      }
      out[j] += s + w[row + j]! * vj;
    }
  };

  let h = n > 1 ? prepare(n - 1, u) : 0;
  if (h > 0) symv(n - 2, u, p);
  for (let i = n - 1; i > 0; i--) {
    const l = i - 1;
    d[i] = w[i * n + i]!; // rows ≥ i are final
    if (h === 0) {
      if (l > 0) {
        h = prepare(l, u);
        if (h > 0) symv(l - 1, u, p);
      }
      continue;
    }
    // q = p/h − K·u with K = uᵀp/(2h²)
    let up = 0;
    for (let j = 0; j <= l; j++) {
      p[j] = p[j]! / h;
      up += u[j]! * p[j]!;
    }
    const kk = up / (h + h);
    for (let j = 0; j <= l; j++) p[j] = p[j]! - kk * u[j]!;
    // A ← A − u qᵀ − q uᵀ: row l first (it defines the next step's vector) …
    const rowL = l * n;
    for (let k = 0; k <= l; k++) w[rowL + k] -= u[l]! * p[k]! + p[l]! * u[k]!;
    const hNext = l > 0 ? prepare(l, uNext) : 0;
    // … then rows 0..l−1, accumulating the next step's A·u in the same pass (one sweep over the matrix per step).
    if (hNext > 0) pNext.fill(0, 0, l);
    for (let j = 0; j < l; j++) {
      const row = j * n;
      const uj = u[j]!;
      const qj = p[j]!;
      if (hNext > 0) {
        const vj = uNext[j]!;
        let s = 0;
        for (let k = 0; k < j; k++) {
          const v = w[row + k]! - (uj * p[k]! + qj * u[k]!);
          w[row + k] = v;
          s += v * uNext[k]!;
          pNext[k] += v * vj;
        }
        const diag = w[row + j]! - 2 * uj * qj;
        w[row + j] = diag;
        pNext[j] += s + diag * vj;
      } else {
        for (let k = 0; k <= j; k++) w[row + k] -= uj * p[k]! + qj * u[k]!;
      }
    }
    [u, uNext] = [uNext, u];
    [p, pNext] = [pNext, p];
    h = hNext;
  }
  if (n > 0) d[0] = w[0]!;
  // e[i] couples i-1 and i; QL wants e[i] coupling i and i+1.
  for (let i = 1; i < n; i++) e[i - 1] = e[i]!;
  if (n > 0) e[n - 1] = 0;
  tridiagonalQl(d, e, n);
  return d.sort();
}

/** Implicit QL with shifts on the symmetric tridiagonal (d diagonal, e[i] = sub-diagonal (i, i+1)); d ← eigenvalues. */
function tridiagonalQl(d: Float64Array, e: Float64Array, n: number): void {
  for (let l = 0; l < n; l++) {
    let iter = 0;
    for (;;) {
      let m = l;
      for (; m < n - 1; m++) {
        const dd = Math.abs(d[m]!) + Math.abs(d[m + 1]!);
        if (Math.abs(e[m]!) <= Number.EPSILON * dd) break;
      }
      if (m === l) break;
      if (++iter > 60) {
        throw new NumericError('symmetric eigenvalue iteration did not converge', { field: `eigenvalue ${l}`, expected: '<= 60 QL sweeps' });
      }
      let g = (d[l + 1]! - d[l]!) / (2 * e[l]!);
      let r = Math.hypot(g, 1);
      g = d[m]! - d[l]! + e[l]! / (g + (g >= 0 ? Math.abs(r) : -Math.abs(r)));
      let s = 1;
      let c = 1;
      let p = 0;
      let i = m - 1;
      let underflow = false;
      for (; i >= l; i--) {
        const f = s * e[i]!;
        const b = c * e[i]!;
        r = Math.hypot(f, g);
        e[i + 1] = r;
        if (r === 0) {
          d[i + 1] = d[i + 1]! - p;
          e[m] = 0;
          underflow = true;
          break;
        }
        s = f / r;
        c = g / r;
        g = d[i + 1]! - p;
        r = (d[i]! - g) * s + 2 * c * b;
        p = s * r;
        d[i + 1] = g + p;
        g = c * r - b;
      }
      if (underflow) continue;
      d[l] = d[l]! - p;
      e[l] = g;
      e[m] = 0;
    }
  }
}

export interface CholeskyResult {
  /** Lower-triangular factor, flat [n, n], zeros above the diagonal; `a ≈ L·Lᵀ`. */
  l: Float64Array;
  /** Number of pivots that were not positive (treated as a semidefinite direction: the column is zero). */
  zeroPivots: number;
}

/**
 * Cholesky factor of a symmetric positive **semi**definite matrix (lower triangle read). Pivots below
 * `relTol · max diag` are treated as exact zeros (their column of L is zero), so rank-deficient covariances (fewer
 * samples than dimensions) still give `a = L·Lᵀ` up to round-off. Throws `NumericError` on NaN/Inf.
 */
export function choleskySemidefinite(a: Float64Array, n: number, relTol = 1e-13): CholeskyResult {
  checkSquare(a, n, 'choleskySemidefinite');
  let maxDiag = 0;
  for (let i = 0; i < n; i++) {
    const v = a[i * n + i]!;
    if (!Number.isFinite(v)) throw new NumericError('non-finite diagonal entry', { field: `[${i},${i}]`, found: v });
    maxDiag = Math.max(maxDiag, Math.abs(v));
  }
  const tol = relTol * maxDiag * Math.max(1, n);
  const l = new Float64Array(n * n);
  let zeroPivots = 0;
  for (let i = 0; i < n; i++) {
    const ri = i * n;
    for (let j = 0; j <= i; j++) {
      const rj = j * n;
      let s = a[ri + j]!;
      for (let k = 0; k < j; k++) s -= l[ri + k]! * l[rj + k]!;
      if (i === j) {
        if (!(s > tol)) {
          if (Number.isNaN(s)) throw new NumericError('NaN in Cholesky factorisation', { field: `[${i},${i}]` });
          l[ri + i] = 0;
          zeroPivots++;
        } else l[ri + i] = Math.sqrt(s);
      } else {
        const ljj = l[rj + j]!;
        l[ri + j] = ljj > 0 ? s / ljj : 0;
      }
    }
  }
  return { l, zeroPivots };
}
