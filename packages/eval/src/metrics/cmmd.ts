/**
 * CMMD (APTP.md §8.4; google-research CMMD `distance.py`, as ported by cmmd-pytorch): squared MMD with a Gaussian RBF
 * kernel k(a, b) = exp(−‖a − b‖² / (2σ²)), σ = 10, ‖a − b‖² evaluated as ‖a‖² + ‖b‖² − 2a·b, and the minimum-variance
 * ("biased", V-statistic) estimator whose means run over all index pairs, diagonal included:
 *
 *   cmmd = scale · (mean k(xᵢ, xⱼ) + mean k(yᵢ, yⱼ) − 2·mean k(xᵢ, yⱼ)),  scale = 1000
 *
 * Computed block-wise (`blockRows` × `blockRows` kernel tiles, each summed inside ORT), so 30k × 30k sets need
 * O(blockRows²) memory, not O(n²). Float64 by default (matches the reference to ~1e-12); `dtype: 'float32'` runs the
 * kernel in float32 like the reference does (about 2× faster, ~1e-4 relative).
 */
import { OnnxGraph, OrtModel, ShapeError } from '@aptp/core';
import type { FeatureMatrix } from './frechet';

export interface CmmdOptions {
  /** RBF bandwidth σ (reference 10). */
  sigma?: number;
  /** Result multiplier (reference 1000). */
  scale?: number;
  /** Rows per kernel tile (default 2048: a 32 MB float64 tile). */
  blockRows?: number;
  /** Kernel arithmetic (default float64). Kernel values are always summed in float64. */
  dtype?: 'float64' | 'float32';
  /** ORT intra-op threads. */
  threads?: number;
  signal?: AbortSignal;
}

export interface CmmdResult {
  cmmd: number;
  meanKxx: number;
  meanKyy: number;
  meanKxy: number;
}

/** Returns a copy with each row scaled to unit L2 norm (CLIP embeddings are compared as unit vectors). */
export function l2NormalizeRows(m: FeatureMatrix): FeatureMatrix {
  const out = new Float64Array(m.rows * m.dim);
  for (let r = 0; r < m.rows; r++) {
    const o = r * m.dim;
    let s = 0;
    for (let c = 0; c < m.dim; c++) s += m.data[o + c]! * m.data[o + c]!;
    const inv = s > 0 ? 1 / Math.sqrt(s) : 0;
    for (let c = 0; c < m.dim; c++) out[o + c] = m.data[o + c]! * inv;
  }
  return { data: out, rows: m.rows, dim: m.dim };
}

/** sum_ij exp(gamma·(‖xᵢ‖² + ‖yⱼ‖² − 2·xᵢ·yⱼ)) for one tile; gamma = −1/(2σ²). */
function rbfSumGraph(dtype: 'float64' | 'float32', gamma: number): Uint8Array {
  const g = new OnnxGraph('rbf_block_sum');
  g.input('x', dtype, ['a', 'd']);
  g.input('y', dtype, ['b', 'd']);
  g.input('xn', dtype, ['a', 1]); // ‖xᵢ‖²
  g.input('yn', dtype, [1, 'b']); // ‖yⱼ‖²
  const c = (v: number): string =>
    g.constant(dtype === 'float64' ? { data: new Float64Array([v]), dims: [] } : { data: new Float32Array([v]), dims: [] });
  const yt = g.op('Transpose', ['y'], { perm: [1, 0] });
  const dot = g.op('MatMul', ['x', yt]); // [a, b]
  const d2 = g.op('Sub', [g.op('Add', ['xn', 'yn']), g.op('Mul', [dot, c(2)])]);
  let k = g.op('Exp', [g.op('Mul', [d2, c(gamma)])]);
  if (dtype === 'float32') k = g.op('Cast', [k], { to: 11 }); // sum the float32 kernel values in double
  g.output(g.op('ReduceSum', [k], { keepdims: 0 }, { output: 'sum' }), 'float64', []);
  return g.toBytes();
}

interface Prepared {
  data: Float32Array | Float64Array;
  norms: Float32Array | Float64Array;
  rows: number;
  dim: number;
}

function prepare(m: FeatureMatrix, dtype: 'float64' | 'float32', name: string): Prepared {
  if (m.data.length !== m.rows * m.dim) {
    throw new ShapeError('feature matrix does not match its dims', { field: name, expected: `${m.rows}x${m.dim}`, found: m.data.length });
  }
  if (m.rows < 1) throw new ShapeError('empty feature set', { field: `${name}.rows`, expected: '>= 1', found: m.rows });
  const data = dtype === 'float64' ? (m.data instanceof Float64Array ? m.data : Float64Array.from(m.data)) : m.data instanceof Float32Array ? m.data : Float32Array.from(m.data);
  const norms = dtype === 'float64' ? new Float64Array(m.rows) : new Float32Array(m.rows);
  for (let r = 0; r < m.rows; r++) {
    let s = 0;
    const o = r * m.dim;
    for (let c = 0; c < m.dim; c++) s += data[o + c]! * data[o + c]!;
    norms[r] = s;
  }
  return { data, norms, rows: m.rows, dim: m.dim };
}

/** CMMD between feature sets x [n, d] and y [m, d] (biased estimator, see the file comment). */
export async function cmmd(x: FeatureMatrix, y: FeatureMatrix, opts: CmmdOptions = {}): Promise<CmmdResult> {
  if (x.dim !== y.dim) throw new ShapeError('feature dims differ', { field: 'y.dim', expected: x.dim, found: y.dim });
  const sigma = opts.sigma ?? 10;
  const scale = opts.scale ?? 1000;
  const dtype = opts.dtype ?? 'float64';
  const block = Math.max(1, opts.blockRows ?? 2048);
  const px = prepare(x, dtype, 'x');
  const py = prepare(y, dtype, 'y');
  const model = await OrtModel.load(rbfSumGraph(dtype, -1 / (2 * sigma * sigma)), { name: '<cmmd rbf tile>', intraOpNumThreads: opts.threads });
  try {
    const tile = async (a: Prepared, a0: number, a1: number, b: Prepared, b0: number, b1: number): Promise<number> => {
      opts.signal?.throwIfAborted();
      const d = a.dim;
      const out = await model.run({
        x: { data: a.data.subarray(a0 * d, a1 * d), dims: [a1 - a0, d] },
        y: { data: b.data.subarray(b0 * d, b1 * d), dims: [b1 - b0, d] },
        xn: { data: a.norms.subarray(a0, a1), dims: [a1 - a0, 1] },
        yn: { data: b.norms.subarray(b0, b1), dims: [1, b1 - b0] },
      });
      return (out.sum!.data as Float64Array)[0]!;
    };
    /** Mean of k over all pairs; `symmetric` uses k(a,b) = k(b,a) to skip the lower tiles. */
    const meanK = async (a: Prepared, b: Prepared, symmetric: boolean): Promise<number> => {
      let total = 0;
      for (let i0 = 0; i0 < a.rows; i0 += block) {
        const i1 = Math.min(a.rows, i0 + block);
        for (let j0 = symmetric ? i0 : 0; j0 < b.rows; j0 += block) {
          const j1 = Math.min(b.rows, j0 + block);
          const s = await tile(a, i0, i1, b, j0, j1);
          total += symmetric && j0 !== i0 ? 2 * s : s;
        }
      }
      return total / (a.rows * b.rows);
    };
    const meanKxx = await meanK(px, px, true);
    const meanKyy = await meanK(py, py, true);
    const meanKxy = await meanK(px, py, false);
    return { cmmd: scale * (meanKxx + meanKyy - 2 * meanKxy), meanKxx, meanKyy, meanKxy };
  } finally {
    await model.dispose();
  }
}
