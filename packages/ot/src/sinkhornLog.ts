import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, InputError, ShapeError } from '@aptp/core';
import { Matrix, MatrixInput, toMarginal, toMatrix, zerosMatrix } from './matrix';

/**
 * General entropic optimal transport in the log domain (APTP.md §2.5 uses its SwAV special case; this is the
 * converged solver, POT's `ot.sinkhorn(a, b, M, reg, method="sinkhorn_log")`):
 *
 *   γ* = argmin_γ ⟨γ, M⟩ + reg·Σ γ_ij log γ_ij   subject to  γ·1 = a,  γᵀ·1 = b.
 *
 * The iteration keeps the log scalings: starting from `logU = logV = 0`,
 *   logV = log b − logsumexp_i(−M/reg + logU),   logU = log a − logsumexp_j(−M/reg + logV),
 * and γ = exp(−M/reg + logU[:, None] + logV[None, :]). Every exponent is ≤ 0 after the max shift of `logsumexp`, so
 * small `reg` (1e-3 and below) neither overflows nor underflows to a zero row — also in float32 / float16. (In
 * float32 the exponents −M/reg + u + v are resolved to ~6e-8·max|M|/reg, which bounds the reachable marginal error:
 * ~5e-6 for max|M| = 1, reg = 1e-3.)
 * Every `checkEvery` iterations (counting from the first) the column-marginal violation ‖γᵀ1 − b‖₂ is compared with
 * `tol`, exactly as POT does, so a float64 run reproduces POT's scalings.
 */
export interface SinkhornLogOptions {
  /** Maximum number of iterations (POT `numItermax`, default 1000). */
  maxIter?: number;
  /** Stop when ‖γᵀ1 − b‖₂ < tol (POT `stopThr`, default 1e-9). */
  tol?: number;
  /** Check the marginal error every this many iterations (POT: 10). */
  checkEvery?: number;
}

export interface SinkhornLogResult<T> {
  /** The plan γ `[n, m]`. */
  plan: T;
  /** Log scalings (defined up to `(logU + c, logV − c)`). */
  logU: T extends Matrix ? Float64Array : tf.Tensor1D;
  logV: T extends Matrix ? Float64Array : tf.Tensor1D;
  /** Iterations run. */
  iterations: number;
  /** ‖γᵀ1 − b‖₂ at the last check. */
  marginalError: number;
  converged: boolean;
}

export const SINKHORN_LOG_DEFAULTS = { maxIter: 1000, tol: 1e-9, checkEvery: 10 } as const;

function checkOptions(reg: number, options: SinkhornLogOptions): Required<SinkhornLogOptions> {
  const maxIter = options.maxIter ?? SINKHORN_LOG_DEFAULTS.maxIter;
  const tol = options.tol ?? SINKHORN_LOG_DEFAULTS.tol;
  const checkEvery = options.checkEvery ?? SINKHORN_LOG_DEFAULTS.checkEvery;
  if (!(reg > 0) || !Number.isFinite(reg)) throw new ConfigError('entropic regularisation must be positive', { field: 'reg', expected: '> 0', found: reg });
  if (!Number.isInteger(maxIter) || maxIter < 1) throw new ConfigError('maxIter must be a positive integer', { field: 'maxIter', found: maxIter });
  if (!(tol >= 0)) throw new ConfigError('tol must be >= 0', { field: 'tol', found: tol });
  if (!Number.isInteger(checkEvery) || checkEvery < 1) throw new ConfigError('checkEvery must be a positive integer', { field: 'checkEvery', found: checkEvery });
  return { maxIter, tol, checkEvery };
}

function checkBalanced(a: Float64Array, b: Float64Array): void {
  let sa = 0;
  let sb = 0;
  for (const v of a) sa += v;
  for (const v of b) sb += v;
  if (Math.abs(sa - sb) > 1e-6 * Math.max(sa, sb)) {
    throw new InputError('marginals must have the same total mass', { field: 'b', expected: `sum ${sa}`, found: `sum ${sb}` });
  }
}

/** Log-domain Sinkhorn in float64 on host arrays (reproduces POT's `sinkhorn_log`). */
export function sinkhornLog(
  a: ArrayLike<number> | undefined,
  b: ArrayLike<number> | undefined,
  M: MatrixInput,
  reg: number,
  options: SinkhornLogOptions = {},
): SinkhornLogResult<Matrix> {
  const { maxIter, tol, checkEvery } = checkOptions(reg, options);
  const cost = toMatrix(M, 'M');
  const n = cost.rows;
  const m = cost.cols;
  const av = toMarginal(a, n, 'a');
  const bv = toMarginal(b, m, 'b');
  checkBalanced(av, bv);
  const Mr = new Float64Array(n * m);
  for (let k = 0; k < Mr.length; k++) Mr[k] = -cost.data[k]! / reg;
  const loga = av.map(Math.log);
  const logb = bv.map(Math.log);
  const u = new Float64Array(n);
  const v = new Float64Array(m);
  const colBuf = new Float64Array(m);

  const updateV = (): void => {
    for (let j = 0; j < m; j++) {
      let max = -Infinity;
      for (let i = 0; i < n; i++) max = Math.max(max, Mr[i * m + j]! + u[i]!);
      let s = 0;
      if (max !== -Infinity) for (let i = 0; i < n; i++) s += Math.exp(Mr[i * m + j]! + u[i]! - max);
      v[j] = logb[j]! - (max === -Infinity ? -Infinity : max + Math.log(s));
    }
  };
  const updateU = (): void => {
    for (let i = 0; i < n; i++) {
      let max = -Infinity;
      for (let j = 0; j < m; j++) max = Math.max(max, Mr[i * m + j]! + v[j]!);
      let s = 0;
      if (max !== -Infinity) for (let j = 0; j < m; j++) s += Math.exp(Mr[i * m + j]! + v[j]! - max);
      u[i] = loga[i]! - (max === -Infinity ? -Infinity : max + Math.log(s));
    }
  };
  const columnError = (): number => {
    colBuf.fill(0);
    for (let i = 0; i < n; i++) for (let j = 0; j < m; j++) colBuf[j] += Math.exp(Mr[i * m + j]! + u[i]! + v[j]!);
    let e = 0;
    for (let j = 0; j < m; j++) e += (colBuf[j]! - bv[j]!) ** 2;
    return Math.sqrt(e);
  };

  let err = Infinity;
  let iterations = 0;
  let converged = false;
  for (let it = 0; it < maxIter; it++) {
    updateV();
    updateU();
    iterations = it + 1;
    if (it % checkEvery === 0) {
      err = columnError();
      if (err < tol) {
        converged = true;
        break;
      }
    }
  }
  const plan = zerosMatrix(n, m);
  for (let i = 0; i < n; i++) for (let j = 0; j < m; j++) plan.data[i * m + j] = Math.exp(Mr[i * m + j]! + u[i]! + v[j]!);
  return { plan, logU: u, logV: v, iterations, marginalError: err, converged };
}

/**
 * Log-domain Sinkhorn on tfjs tensors (float32 on every backend): `a [n]`, `b [m]`, `M [n, m]`. Convergence is read
 * back every `checkEvery` iterations (hence async). The caller owns `plan`, `logU` and `logV`.
 */
export async function sinkhornLogTf(
  a: tf.Tensor1D,
  b: tf.Tensor1D,
  M: tf.Tensor2D,
  reg: number,
  options: SinkhornLogOptions = {},
): Promise<SinkhornLogResult<tf.Tensor2D>> {
  const { maxIter, tol, checkEvery } = checkOptions(reg, options);
  if (M.rank !== 2 || a.rank !== 1 || b.rank !== 1 || a.shape[0] !== M.shape[0] || b.shape[0] !== M.shape[1]) {
    throw new ShapeError('expected a [n], b [m], M [n, m]', { field: 'M', expected: `[${a.shape[0]}, ${b.shape[0]}]`, found: M.shape });
  }
  const [n, m] = M.shape;
  const Mr = tf.tidy(() => tf.div(tf.cast(M, 'float32'), -reg)); // [n, m]
  const loga = tf.tidy(() => tf.reshape(tf.log(tf.cast(a, 'float32')), [n, 1]));
  const logb = tf.tidy(() => tf.reshape(tf.log(tf.cast(b, 'float32')), [1, m]));
  let u: tf.Tensor2D = tf.zeros([n, 1]);
  let v: tf.Tensor2D = tf.zeros([1, m]);
  let err = Infinity;
  let iterations = 0;
  let converged = false;
  try {
    for (let it = 0; it < maxIter; it++) {
      const [nu, nv] = tf.tidy(() => {
        const v1 = tf.sub(logb, tf.logSumExp(tf.add(Mr, u), 0, true)) as tf.Tensor2D; // [1, m]
        const u1 = tf.sub(loga, tf.logSumExp(tf.add(Mr, v1), 1, true)) as tf.Tensor2D; // [n, 1]
        return [u1, v1];
      });
      tf.dispose([u, v]);
      u = nu;
      v = nv;
      iterations = it + 1;
      if (it % checkEvery === 0) {
        const e = tf.tidy(() => tf.norm(tf.sub(tf.sum(tf.exp(tf.add(tf.add(Mr, u), v)), 0, true), tf.exp(logb))));
        err = (await e.data())[0]!;
        e.dispose();
        if (err < tol) {
          converged = true;
          break;
        }
      }
    }
    const plan = tf.tidy(() => tf.exp(tf.add(tf.add(Mr, u), v)) as tf.Tensor2D);
    const logU = tf.reshape(u, [n]) as tf.Tensor1D;
    const logV = tf.reshape(v, [m]) as tf.Tensor1D;
    return { plan, logU, logV, iterations, marginalError: err, converged };
  } finally {
    tf.dispose([Mr, loga, logb, u, v]);
  }
}
