import { InputError, NumericError, ShapeError } from '@aptp/core';

/** A dense row-major float64 matrix: entry (i, j) is `data[i * cols + j]`. */
export interface Matrix {
  readonly rows: number;
  readonly cols: number;
  readonly data: Float64Array;
}

/** A matrix given as a `Matrix` or as rows (`number[][]`, `Float32Array[]`, ...). */
export type MatrixInput = Matrix | readonly ArrayLike<number>[];

function isMatrix(x: MatrixInput): x is Matrix {
  return !Array.isArray(x) && typeof (x as Matrix).rows === 'number' && (x as Matrix).data instanceof Float64Array;
}

export function zerosMatrix(rows: number, cols: number): Matrix {
  return { rows, cols, data: new Float64Array(rows * cols) };
}

/** Matrix entries as rows (for printing and tests). */
export function matrixRows(m: Matrix): number[][] {
  const out: number[][] = [];
  for (let i = 0; i < m.rows; i++) out.push(Array.from(m.data.subarray(i * m.cols, (i + 1) * m.cols)));
  return out;
}

/** Validates and copies a matrix argument; `name` appears in errors (`M: expected finite entries, found NaN at (2, 3)`). */
export function toMatrix(x: MatrixInput, name: string, options: { allowInfinity?: boolean } = {}): Matrix {
  let m: Matrix;
  if (isMatrix(x)) {
    if (x.data.length !== x.rows * x.cols) {
      throw new ShapeError('matrix data length does not match its shape', { field: name, expected: x.rows * x.cols, found: x.data.length });
    }
    m = { rows: x.rows, cols: x.cols, data: Float64Array.from(x.data) };
  } else {
    if (!Array.isArray(x)) throw new InputError('expected a Matrix or an array of rows', { field: name, found: typeof x });
    const rows = x.length;
    const cols = rows > 0 ? x[0]!.length : 0;
    m = zerosMatrix(rows, cols);
    for (let i = 0; i < rows; i++) {
      const r = x[i]!;
      if (r.length !== cols) throw new ShapeError('ragged rows', { field: `${name}[${i}]`, expected: cols, found: r.length });
      for (let j = 0; j < cols; j++) m.data[i * cols + j] = r[j]!;
    }
  }
  if (m.rows === 0 || m.cols === 0) throw new ShapeError('empty matrix', { field: name, expected: '[n>0, m>0]', found: [m.rows, m.cols] });
  for (let k = 0; k < m.data.length; k++) {
    const v = m.data[k]!;
    if (Number.isNaN(v) || (!options.allowInfinity && !Number.isFinite(v))) {
      throw new NumericError('expected finite entries', { field: name, found: `${v} at (${Math.floor(k / m.cols)}, ${k % m.cols})` });
    }
  }
  return m;
}

/**
 * Validates a marginal (histogram) of length `n`: finite, non-negative, positive sum. `undefined` or an empty array
 * means uniform `1/n` (as POT does).
 */
export function toMarginal(x: ArrayLike<number> | undefined, n: number, name: string): Float64Array {
  if (x === undefined || x.length === 0) return new Float64Array(n).fill(1 / n);
  if (x.length !== n) throw new ShapeError('marginal length does not match the cost matrix', { field: name, expected: n, found: x.length });
  const out = Float64Array.from(x);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const v = out[i]!;
    if (!Number.isFinite(v) || v < 0) throw new InputError('marginal entries must be finite and >= 0', { field: name, found: `${v} at ${i}` });
    sum += v;
  }
  if (!(sum > 0)) throw new InputError('marginal must have a positive sum', { field: name, found: sum });
  return out;
}

/** `Σ_ij plan_ij · M_ij`. */
export function transportCost(plan: Matrix, M: Matrix): number {
  if (plan.rows !== M.rows || plan.cols !== M.cols) {
    throw new ShapeError('plan and cost matrix differ in shape', { field: 'plan', expected: [M.rows, M.cols], found: [plan.rows, plan.cols] });
  }
  let c = 0;
  for (let k = 0; k < plan.data.length; k++) c += plan.data[k]! * M.data[k]!;
  return c;
}

/** Row sums and column sums of a matrix (the marginals of a transport plan). */
export function marginalsOf(plan: Matrix): { rowSums: Float64Array; colSums: Float64Array } {
  const rowSums = new Float64Array(plan.rows);
  const colSums = new Float64Array(plan.cols);
  for (let i = 0; i < plan.rows; i++) {
    for (let j = 0; j < plan.cols; j++) {
      const v = plan.data[i * plan.cols + j]!;
      rowSums[i] += v;
      colSums[j] += v;
    }
  }
  return { rowSums, colSums };
}

/** Index of the largest entry of every row (first one on ties, like `torch.argmax`). */
export function argmaxRows(m: MatrixInput): Int32Array {
  const x = toMatrix(m, 'matrix', { allowInfinity: true });
  const out = new Int32Array(x.rows);
  for (let i = 0; i < x.rows; i++) {
    let best = 0;
    let bestV = x.data[i * x.cols]!;
    for (let j = 1; j < x.cols; j++) {
      const v = x.data[i * x.cols + j]!;
      if (v > bestV) {
        bestV = v;
        best = j;
      }
    }
    out[i] = best;
  }
  return out;
}
