/**
 * Float64 matrix products on onnxruntime-node (the CPU EP has double MatMul at ~45 GFLOP/s, ~50× plain JS;
 * STACK.md §7). Tiny graphs built with `OnnxGraph`, one session each, created on first use; `dispose()` frees them.
 * Matrices are flat row-major `Float64Array`s.
 */
import { OnnxGraph, OrtModel, ShapeError } from '@aptp/core';

type GraphKind = 'matmul' | 'gram' | 'congruence';

function buildGraph(kind: GraphKind): Uint8Array {
  const g = new OnnxGraph(`f64_${kind}`);
  if (kind === 'matmul') {
    g.input('a', 'float64', ['m', 'k']);
    g.input('b', 'float64', ['k', 'n']);
    g.output(g.op('MatMul', ['a', 'b'], {}, { output: 'y' }), 'float64', ['m', 'n']);
  } else if (kind === 'gram') {
    // y = xᵀ x  ([r, d] → [d, d])
    g.input('x', 'float64', ['r', 'd']);
    const xt = g.op('Transpose', ['x'], { perm: [1, 0] });
    g.output(g.op('MatMul', [xt, 'x'], {}, { output: 'y' }), 'float64', ['d', 'd']);
  } else {
    // y = lᵀ s l  ([n, n] each)
    g.input('l', 'float64', ['n', 'n']);
    g.input('s', 'float64', ['n', 'n']);
    const lt = g.op('Transpose', ['l'], { perm: [1, 0] });
    const ts = g.op('MatMul', [lt, 's']);
    g.output(g.op('MatMul', [ts, 'l'], {}, { output: 'y' }), 'float64', ['n', 'n']);
  }
  return g.toBytes();
}

function check(data: Float64Array, rows: number, cols: number, field: string): void {
  if (data.length !== rows * cols) {
    throw new ShapeError('matrix data does not match its dims', { field, expected: `${rows}x${cols} = ${rows * cols}`, found: data.length });
  }
}

export class Float64Linalg {
  private readonly models = new Map<GraphKind, Promise<OrtModel>>();

  constructor(private readonly threads?: number) {}

  private model(kind: GraphKind): Promise<OrtModel> {
    let m = this.models.get(kind);
    if (m === undefined) {
      m = OrtModel.load(buildGraph(kind), { name: `<float64 ${kind}>`, intraOpNumThreads: this.threads });
      this.models.set(kind, m);
    }
    return m;
  }

  /** a [m, k] · b [k, n] → [m, n]. */
  async matmul(a: Float64Array, m: number, k: number, b: Float64Array, n: number): Promise<Float64Array> {
    check(a, m, k, 'a');
    check(b, k, n, 'b');
    const out = await (await this.model('matmul')).run({ a: { data: a, dims: [m, k] }, b: { data: b, dims: [k, n] } });
    return out.y!.data as Float64Array;
  }

  /** xᵀ x for x [rows, d] → [d, d]. */
  async gram(x: Float64Array, rows: number, d: number): Promise<Float64Array> {
    check(x, rows, d, 'x');
    const out = await (await this.model('gram')).run({ x: { data: x, dims: [rows, d] } });
    return out.y!.data as Float64Array;
  }

  /** lᵀ s l for square l, s [n, n] → [n, n]. */
  async congruence(l: Float64Array, s: Float64Array, n: number): Promise<Float64Array> {
    check(l, n, n, 'l');
    check(s, n, n, 's');
    const out = await (await this.model('congruence')).run({ l: { data: l, dims: [n, n] }, s: { data: s, dims: [n, n] } });
    return out.y!.data as Float64Array;
  }

  /** Releases every session. Idempotent. */
  async dispose(): Promise<void> {
    const models = [...this.models.values()];
    this.models.clear();
    for (const m of models) await (await m).dispose();
  }
}
