/**
 * Fréchet distance between two Gaussians fitted to feature sets (FID, APTP.md §8.2), in float64, with the semantics of
 * pytorch-fid 0.3.0 `calculate_frechet_distance` (what clean-fid legacy_pytorch calls):
 *
 *   fid = ‖μx − μy‖² + tr Σx + tr Σy − 2·tr sqrtm(Σx·Σy)
 *
 * μ = row mean, Σ = sample covariance (divisor n − 1). The trace of the matrix square root is computed without
 * sqrtm: with Σx = L·Lᵀ (Cholesky), Σx·Σy = L·(Lᵀ·Σy) has the eigenvalues of the symmetric PSD matrix Lᵀ·Σy·L, so
 * tr sqrtm(Σx·Σy) = Σ √λ(Lᵀ·Σy·L) (negative round-off eigenvalues count as 0, as SciPy's discarded imaginary part).
 * The O(d³) products run as float64 ORT MatMuls; eigenvalues come from `symmetricEigenvalues` (STACK.md §7).
 */
import { NumericError, ShapeError } from '@aptp/core';
import { Float64Linalg } from './matmul64';
import { choleskySemidefinite, symmetricEigenvalues } from './symEig';

/** Row-major feature matrix: `rows` samples of `dim` features. */
export interface FeatureMatrix {
  data: Float32Array | Float64Array;
  rows: number;
  dim: number;
}

/** Gaussian statistics of a feature set (float64). */
export interface GaussianStats {
  /** [dim] */
  mu: Float64Array;
  /** [dim, dim], sample covariance with divisor count − 1. */
  sigma: Float64Array;
  dim: number;
  /** Number of samples the statistics came from. */
  count: number;
}

export interface FrechetResult {
  fid: number;
  /** ‖μx − μy‖² */
  meanTerm: number;
  traceSigmaX: number;
  traceSigmaY: number;
  /** tr sqrtm(Σx·Σy) */
  traceSqrtProduct: number;
  /** Semidefinite directions of Σx met by the Cholesky factorisation (rank deficiency, e.g. fewer samples than dims). */
  zeroPivots: number;
}

export interface LinalgOptions {
  /** Reuse an existing set of float64 ORT sessions (otherwise one is created and disposed per call). */
  linalg?: Float64Linalg;
}

export interface GaussianStatsOptions extends LinalgOptions {
  /** Rows per covariance chunk (bounds memory: chunkRows·dim doubles). Default 4096. */
  chunkRows?: number;
}

async function withLinalg<T>(opts: LinalgOptions, f: (l: Float64Linalg) => Promise<T>): Promise<T> {
  if (opts.linalg) return f(opts.linalg);
  const linalg = new Float64Linalg();
  try {
    return await f(linalg);
  } finally {
    await linalg.dispose();
  }
}

/** μ and Σ (divisor n − 1) of a feature matrix, in float64, two-pass (mean first, then centred XᵀX in chunks). */
export async function gaussianStats(features: FeatureMatrix, opts: GaussianStatsOptions = {}): Promise<GaussianStats> {
  const { data, rows, dim } = features;
  if (data.length !== rows * dim) {
    throw new ShapeError('feature matrix does not match its dims', { field: 'features', expected: `${rows}x${dim}`, found: data.length });
  }
  if (rows < 2) throw new ShapeError('covariance needs at least 2 samples', { field: 'features.rows', expected: '>= 2', found: rows });
  const mu = new Float64Array(dim);
  for (let r = 0; r < rows; r++) {
    const o = r * dim;
    for (let c = 0; c < dim; c++) mu[c] += data[o + c]!;
  }
  for (let c = 0; c < dim; c++) {
    mu[c] = mu[c]! / rows;
    if (!Number.isFinite(mu[c]!)) throw new NumericError('non-finite feature values', { field: `features[:, ${c}]`, found: mu[c] });
  }
  const chunkRows = Math.max(1, Math.min(rows, opts.chunkRows ?? 4096));
  const sigma = new Float64Array(dim * dim);
  await withLinalg(opts, async (linalg) => {
    const chunk = new Float64Array(chunkRows * dim);
    for (let start = 0; start < rows; start += chunkRows) {
      const n = Math.min(chunkRows, rows - start);
      for (let r = 0; r < n; r++) {
        const src = (start + r) * dim;
        const dst = r * dim;
        for (let c = 0; c < dim; c++) chunk[dst + c] = data[src + c]! - mu[c]!;
      }
      const g = await linalg.gram(n === chunkRows ? chunk : chunk.subarray(0, n * dim), n, dim);
      for (let i = 0; i < g.length; i++) sigma[i] += g[i]!;
    }
  });
  for (let i = 0; i < sigma.length; i++) sigma[i] = sigma[i]! / (rows - 1);
  return { mu, sigma, dim, count: rows };
}

function trace(a: Float64Array, n: number): number {
  let t = 0;
  for (let i = 0; i < n; i++) t += a[i * n + i]!;
  return t;
}

function checkStats(s: GaussianStats, name: string): void {
  if (s.mu.length !== s.dim || s.sigma.length !== s.dim * s.dim) {
    throw new ShapeError('statistics do not match their dim', { field: name, expected: `mu [${s.dim}], sigma [${s.dim},${s.dim}]`, found: `mu [${s.mu.length}], sigma ${s.sigma.length} values` });
  }
}

/** tr sqrtm(Σx·Σy) via Cholesky of Σx and the eigenvalues of Lᵀ·Σy·L. */
export async function traceSqrtProduct(
  sigmaX: Float64Array,
  sigmaY: Float64Array,
  dim: number,
  opts: LinalgOptions = {},
): Promise<{ trace: number; zeroPivots: number }> {
  const { l, zeroPivots } = choleskySemidefinite(sigmaX, dim);
  const c = await withLinalg(opts, (linalg) => linalg.congruence(l, sigmaY, dim));
  const eig = symmetricEigenvalues(c, dim);
  let t = 0;
  for (const v of eig) if (v > 0) t += Math.sqrt(v);
  return { trace: t, zeroPivots };
}

/** Fréchet distance between two Gaussians (pytorch-fid semantics, see the file comment). */
export async function frechetDistance(x: GaussianStats, y: GaussianStats, opts: LinalgOptions = {}): Promise<FrechetResult> {
  checkStats(x, 'x');
  checkStats(y, 'y');
  if (x.dim !== y.dim) throw new ShapeError('feature dims differ', { field: 'y.dim', expected: x.dim, found: y.dim });
  const dim = x.dim;
  let meanTerm = 0;
  for (let i = 0; i < dim; i++) {
    const d = x.mu[i]! - y.mu[i]!;
    meanTerm += d * d;
  }
  const traceSigmaX = trace(x.sigma, dim);
  const traceSigmaY = trace(y.sigma, dim);
  const { trace: tsp, zeroPivots } = await traceSqrtProduct(x.sigma, y.sigma, dim, opts);
  const fid = meanTerm + traceSigmaX + traceSigmaY - 2 * tsp;
  if (!Number.isFinite(fid)) throw new NumericError('Fréchet distance is not finite', { field: 'fid', found: fid });
  return { fid, meanTerm, traceSigmaX, traceSigmaY, traceSqrtProduct: tsp, zeroPivots };
}
