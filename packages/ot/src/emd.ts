import { ConfigError, NumericError } from '@aptp/core';
import { Matrix, MatrixInput, toMarginal, toMatrix, transportCost, zerosMatrix } from './matrix';

/**
 * Exact optimal transport (earth mover's distance) for small problems, float64:
 *
 *   γ* = argmin_γ ⟨γ, M⟩  subject to  γ·1 = a,  γᵀ·1 = b,  γ ≥ 0.
 *
 * Solved as a min-cost flow on the bipartite graph rows → columns by successive shortest paths (Dijkstra with
 * reduced costs, dense O((n+m)²) per augmentation). Each augmentation empties a supply, fills a demand or empties a
 * flow, so the plan is a vertex of the transport polytope (at most n+m−1 non-zeros) and its entries are sums and
 * differences of marginal entries: as exact as POT's network simplex (`ot.emd`). The returned duals `u`, `v` certify
 * optimality: `u_i + v_j ≤ M_ij` everywhere, with equality wherever `γ_ij > 0`, and `Σ a u + Σ b v = ⟨γ, M⟩`.
 *
 * Like POT, `b` is rescaled to the total mass of `a`. Costs may be negative. Intended for n·m up to ~10⁵; for the
 * router's N prompts × K experts with capacities use `balancedAssignment`.
 */
export interface EmdResult {
  plan: Matrix;
  /** ⟨γ, M⟩. */
  cost: number;
  /** Dual potentials of the rows and columns. */
  u: Float64Array;
  v: Float64Array;
  /** Number of augmenting paths. */
  augmentations: number;
}

export interface EmdOptions {
  /** Safety cap on augmenting paths (default 50·(n+m)² + 1000); exceeding it raises `NumericError`. */
  maxAugmentations?: number;
}

export function emd(a: ArrayLike<number> | undefined, b: ArrayLike<number> | undefined, M: MatrixInput, options: EmdOptions = {}): EmdResult {
  const cost = toMatrix(M, 'M');
  const n = cost.rows;
  const m = cost.cols;
  const supply = toMarginal(a, n, 'a');
  const demand = toMarginal(b, m, 'b');
  let sa = 0;
  let sb = 0;
  for (const x of supply) sa += x;
  for (const x of demand) sb += x;
  for (let j = 0; j < m; j++) demand[j] = (demand[j]! * sa) / sb;
  const tol = 1e-14 * sa;
  const maxAug = options.maxAugmentations ?? 50 * (n + m) ** 2 + 1000;
  if (!Number.isInteger(maxAug) || maxAug < 1) throw new ConfigError('maxAugmentations must be a positive integer', { field: 'maxAugmentations', found: maxAug });

  const C = cost.data;
  const flow = new Float64Array(n * m);
  // Potentials: reduced cost of row i → column j is C_ij + pr_i − pc_j ≥ 0; of the reverse (flow) edge: the negative.
  const pr = new Float64Array(n);
  const pc = new Float64Array(m);
  for (let j = 0; j < m; j++) {
    let mn = Infinity;
    for (let i = 0; i < n; i++) mn = Math.min(mn, C[i * m + j]!);
    pc[j] = mn;
  }

  const dr = new Float64Array(n);
  const dc = new Float64Array(m);
  const doneR = new Uint8Array(n);
  const doneC = new Uint8Array(m);
  const parentOfCol = new Int32Array(m); // the row a column was reached from
  const parentOfRow = new Int32Array(n); // the column a row was reached from (−1: a source)

  let augmentations = 0;
  for (;;) {
    dr.fill(Infinity);
    dc.fill(Infinity);
    doneR.fill(0);
    doneC.fill(0);
    let anySource = false;
    for (let i = 0; i < n; i++) {
      if (supply[i]! > tol) {
        dr[i] = 0;
        parentOfRow[i] = -1;
        anySource = true;
      }
    }
    if (!anySource) break;
    let anyDemand = false;
    for (let j = 0; j < m; j++) if (demand[j]! > tol) anyDemand = true;
    if (!anyDemand) break;
    if (++augmentations > maxAug) {
      throw new NumericError('exact OT did not terminate', { field: 'emd', expected: `<= ${maxAug} augmentations`, found: augmentations });
    }

    // Dense Dijkstra from every row with remaining supply to the nearest column with remaining demand.
    let target = -1;
    let dTarget = Infinity;
    for (;;) {
      let best = Infinity;
      let node = -1;
      let isRow = true;
      for (let i = 0; i < n; i++) if (!doneR[i] && dr[i]! < best) { best = dr[i]!; node = i; isRow = true; }
      for (let j = 0; j < m; j++) if (!doneC[j] && dc[j]! < best) { best = dc[j]!; node = j; isRow = false; }
      if (node < 0) break;
      if (isRow) {
        doneR[node] = 1;
        const i = node;
        for (let j = 0; j < m; j++) {
          if (doneC[j]) continue;
          const rc = Math.max(0, C[i * m + j]! + pr[i]! - pc[j]!);
          if (best + rc < dc[j]!) {
            dc[j] = best + rc;
            parentOfCol[j] = i;
          }
        }
      } else {
        doneC[node] = 1;
        const j = node;
        if (demand[j]! > tol) {
          target = j;
          dTarget = best;
          break;
        }
        for (let i = 0; i < n; i++) {
          if (doneR[i] || !(flow[i * m + j]! > 0)) continue;
          const rc = Math.max(0, -C[i * m + j]! - pr[i]! + pc[j]!);
          if (best + rc < dr[i]!) {
            dr[i] = best + rc;
            parentOfRow[i] = j;
          }
        }
      }
    }
    if (target < 0) throw new NumericError('no augmenting path in exact OT', { field: 'emd' });

    for (let i = 0; i < n; i++) pr[i] += Math.min(dr[i]!, dTarget);
    for (let j = 0; j < m; j++) pc[j] += Math.min(dc[j]!, dTarget);

    // Bottleneck along the path target column ← row ← column ← ... ← source row.
    let delta = demand[target]!;
    let j = target;
    let i = parentOfCol[j]!;
    for (;;) {
      const pj = parentOfRow[i]!;
      if (pj < 0) break;
      delta = Math.min(delta, flow[i * m + pj]!);
      j = pj;
      i = parentOfCol[j]!;
    }
    delta = Math.min(delta, supply[i]!);
    // Apply.
    supply[i] -= delta;
    demand[target] -= delta;
    j = target;
    i = parentOfCol[j]!;
    for (;;) {
      flow[i * m + j] += delta;
      const pj = parentOfRow[i]!;
      if (pj < 0) break;
      const f = flow[i * m + pj]! - delta;
      flow[i * m + pj] = f > 0 ? f : 0;
      j = pj;
      i = parentOfCol[j]!;
    }
  }

  const plan = zerosMatrix(n, m);
  plan.data.set(flow);
  const u = new Float64Array(n);
  for (let i = 0; i < n; i++) u[i] = -pr[i]!;
  return { plan, cost: transportCost(plan, cost), u, v: Float64Array.from(pc), augmentations };
}
