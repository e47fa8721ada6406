import { Matrix, MatrixInput, toMatrix } from './matrix';

/**
 * Exact linear assignment (Hungarian method with potentials, shortest augmenting paths, O(n²·m)) — the same problem
 * as SciPy's `linear_sum_assignment`: choose min(n, m) cells, at most one per row and per column, minimising (or,
 * with `maximize`, maximising) the summed cost. Rows come back in increasing order.
 */
export interface AssignmentResult {
  rowInd: Int32Array;
  colInd: Int32Array;
  /** Σ cost[rowInd[k], colInd[k]] (the original costs, also when maximising). */
  total: number;
}

export function linearSumAssignment(cost: MatrixInput, options: { maximize?: boolean } = {}): AssignmentResult {
  const C = toMatrix(cost, 'cost');
  const sign = options.maximize ? -1 : 1;
  const transposed = C.rows > C.cols;
  const n = transposed ? C.cols : C.rows; // n ≤ m
  const m = transposed ? C.rows : C.cols;
  const at = (i: number, j: number): number => sign * (transposed ? C.data[j * C.cols + i]! : C.data[i * C.cols + j]!);

  // 1-based arrays as in the classic formulation; column 0 is a virtual column.
  const u = new Float64Array(n + 1);
  const v = new Float64Array(m + 1);
  const p = new Int32Array(m + 1); // p[j] = row matched to column j (0 = none)
  const way = new Int32Array(m + 1);
  const minv = new Float64Array(m + 1);
  const used = new Uint8Array(m + 1);
  for (let i = 1; i <= n; i++) {
    p[0] = i;
    let j0 = 0;
    minv.fill(Infinity);
    used.fill(0);
    do {
      used[j0] = 1;
      const i0 = p[j0]!;
      let delta = Infinity;
      let j1 = 0;
      for (let j = 1; j <= m; j++) {
        if (used[j]) continue;
        const cur = at(i0 - 1, j - 1) - u[i0]! - v[j]!;
        if (cur < minv[j]!) {
          minv[j] = cur;
          way[j] = j0;
        }
        if (minv[j]! < delta) {
          delta = minv[j]!;
          j1 = j;
        }
      }
      for (let j = 0; j <= m; j++) {
        if (used[j]) {
          u[p[j]!] += delta;
          v[j] -= delta;
        } else {
          minv[j] -= delta;
        }
      }
      j0 = j1;
    } while (p[j0] !== 0);
    do {
      const j1 = way[j0]!;
      p[j0] = p[j1]!;
      j0 = j1;
    } while (j0 !== 0);
  }

  const pairs: [number, number][] = [];
  for (let j = 1; j <= m; j++) {
    if (p[j] !== 0) pairs.push(transposed ? [j - 1, p[j]! - 1] : [p[j]! - 1, j - 1]);
  }
  pairs.sort((x, y) => x[0] - y[0]);
  const rowInd = Int32Array.from(pairs.map((q) => q[0]));
  const colInd = Int32Array.from(pairs.map((q) => q[1]));
  let total = 0;
  for (let k = 0; k < rowInd.length; k++) total += C.data[rowInd[k]! * C.cols + colInd[k]!]!;
  return { rowInd, colInd, total };
}

/** The assignment as a 0/1 matrix of the cost's shape. */
export function assignmentMatrix(result: AssignmentResult, rows: number, cols: number): Matrix {
  const data = new Float64Array(rows * cols);
  for (let k = 0; k < result.rowInd.length; k++) data[result.rowInd[k]! * cols + result.colInd[k]!] = 1;
  return { rows, cols, data };
}
