import { InputError, OnnxGraph, OrtModel, ShapeError, defaultOrtThreads } from '@aptp/core';
import type { ArchitectureLayout } from '@aptp/unet-gating';
import { layoutConstants } from './gateGroups';
import type { GumbelSigmoidOptions } from './gumbel';
import { depthOrderMod } from './gumbel';

/**
 * Fast eval-mode routing scores on host arrays (issue 5: 10k prompts → 16 codes well under a second). Same semantics
 * as the tfjs path `cos(N(GS_eval(e)), N(embeddingGs))` (APTP.md §2.4–2.5; `gumbel.ts`, `normalize.ts`):
 * - the two matmuls (predictor `x·W + b`, and `N̂(A)·N̂(C)ᵀ`) run as one small ONNX `MatMul`+`Add` graph on
 *   onnxruntime ({@link OrtMatMul}: float32, 2 intra-op threads; one session per router, built on first use and
 *   released by `PromptRouter.dispose()`, weights fed as inputs so trained weights are always current);
 * - the Gumbel-sigmoid (width sigmoid, non-zero rule, depth importance ordering and its scatter), the width/depth
 *   normalisation and the row L2 normalisation run in plain loops, each step rounded to float32 in the order of the
 *   tfjs `cpu` kernels, so the gates are the tfjs gates (the matmuls differ only in summation order).
 * The soft width sigmoid is only evaluated where its value matters (depth-gated sub-blocks, and arguments within
 * 1e-6 of 0 where float32 rounding can decide the hard threshold); elsewhere hard(σ(z)) = [z ≥ 0] exactly.
 */

/**
 * `Y = A·B + bias` (A `[M, K]`, B `[K, N]`, bias `[N]`, all float32 and symbolic) on one onnxruntime session, built
 * on first use. Weights are fed as inputs, so one session serves every matmul of its owner (the `PromptRouter`, which
 * releases it in its `dispose()`). `dispose()` is idempotent, waits for runs in flight, then releases the native
 * session; a run after it is an `E_DISPOSED` error.
 */
export class OrtMatMul {
  private model: Promise<OrtModel> | null = null;
  private readonly inflight = new Set<Promise<unknown>>();
  private released: Promise<void> | null = null;

  /** True once a session has been (or is being) created and not yet released. */
  get hasSession(): boolean {
    return this.model !== null;
  }

  get disposed(): boolean {
    return this.released !== null;
  }

  /** `a·b + bias` (float32). `bias` defaults to zeros (adding +0 is exact). */
  async run(a: Float32Array, b: Float32Array, m: number, k: number, n: number, bias?: Float32Array): Promise<Float32Array> {
    if (a.length !== m * k) throw new ShapeError('matmul input has the wrong size', { field: 'a', expected: m * k, found: a.length });
    if (b.length !== k * n) throw new ShapeError('matmul input has the wrong size', { field: 'b', expected: k * n, found: b.length });
    const job = this.session().then((model) =>
      model.run({ a: { data: a, dims: [m, k] }, b: { data: b, dims: [k, n] }, bias: { data: bias ?? new Float32Array(n), dims: [n] } }),
    );
    this.inflight.add(job);
    try {
      return (await job).y!.data as Float32Array;
    } finally {
      this.inflight.delete(job);
    }
  }

  /** Waits for the runs in flight, then releases the session (if one was created). Idempotent. */
  dispose(): Promise<void> {
    if (this.released === null) {
      const model = this.model;
      this.model = null;
      const pending = [...this.inflight];
      this.released = Promise.allSettled(pending).then(async () => {
        if (model === null) return;
        const loaded = await model.catch(() => null); // a failed load was already reported to its run
        await loaded?.dispose();
      });
    }
    return this.released;
  }

  private session(): Promise<OrtModel> {
    if (this.released !== null) return Promise.reject(new InputError('fast routing matmul used after dispose()', { code: 'E_DISPOSED', field: 'router_matmul' }));
    if (this.model === null) {
      const g = new OnnxGraph('router_matmul', { opset: 17 });
      const a = g.input('a', 'float32', ['M', 'K']);
      const b = g.input('b', 'float32', ['K', 'N']);
      const bias = g.input('bias', 'float32', ['N']);
      const y = g.op('MatMul', [a, b]);
      g.op('Add', [y, bias], {}, { output: 'y' });
      g.output('y', 'float32', ['M', 'N']);
      const loading = OrtModel.load(g.toBytes(), { name: 'router_matmul', intraOpNumThreads: defaultOrtThreads() });
      this.model = loading;
      loading.catch(() => {
        if (this.model === loading) this.model = null; // the next run retries
      });
    }
    return this.model;
  }
}

const f = Math.fround;

/** Precomputed per-layout index tables for {@link evalGatesNormalized}. */
interface GateTables {
  L: number;
  W: number;
  D: number;
  /** Width gate of every width entry. */
  gateOf: Int32Array;
  /** Gate offsets / ends. */
  gateStart: Int32Array;
  gateEnd: Int32Array;
  /** Depth gate k owning width entry i (depth-gated sub-blocks), else −1. */
  depthOfWidth: Int32Array;
  /** √(float32(1/w)) per entry (1 for depth entries). */
  sqrtTemplate: Float32Array;
  /** Depth scatter: draw position j → depth gate order[j]. */
  order: Int32Array;
}

const tableCache = new WeakMap<ArchitectureLayout, Map<string, GateTables>>();

function gateTables(layout: ArchitectureLayout, depthOrder: readonly number[]): GateTables {
  const key = depthOrder.join(',');
  let perLayout = tableCache.get(layout);
  const hit = perLayout?.get(key);
  if (hit) return hit;
  const W = layout.widthEntries;
  const D = layout.depthEntries;
  const G = layout.widthGates.length;
  const c = layoutConstants(layout);
  const gateOf = new Int32Array(W).fill(-1);
  const gateStart = new Int32Array(G);
  const gateEnd = new Int32Array(G);
  layout.widthGates.forEach((g, gi) => {
    gateStart[gi] = g.offset;
    gateEnd[gi] = g.end;
    for (let i = g.offset; i < g.end; i++) gateOf[i] = gi;
  });
  const depthOfWidth = new Int32Array(W).fill(-1);
  for (let k = 0; k < D; k++) for (let i = 0; i < W; i++) if (c.depthToWidth[k * W + i] === 1) depthOfWidth[i] = k;
  const t: GateTables = {
    L: layout.vectorLength,
    W,
    D,
    gateOf,
    gateStart,
    gateEnd,
    depthOfWidth,
    sqrtTemplate: c.sqrtTemplate,
    order: Int32Array.from(depthOrderMod(depthOrder, D)),
  };
  if (!perLayout) tableCache.set(layout, (perLayout = new Map()));
  perLayout.set(key, t);
  return t;
}

function sigmoid(z: number): number {
  return f(1 / (1 + Math.exp(-z)));
}

/**
 * Row-L2-normalised N(GS(logits; noise)) `[R, L]` (written into `out`, which may be `logits` itself): exactly the rows
 * `cosineSimilarity` multiplies, computed on host arrays. `noise` holds `noiseRows` rows (default `rows`) and row r uses
 * noise row `r mod noiseRows` (the reference eval stream repeats every `evalBatchSize` rows); null = zero noise.
 */
export function evalGatesNormalized(
  logits: Float32Array,
  noise: Float32Array | null,
  rows: number,
  layout: ArchitectureLayout,
  options: GumbelSigmoidOptions,
  out: Float32Array = new Float32Array(rows * layout.vectorLength),
  noiseRows = rows,
): Float32Array {
  const t = gateTables(layout, options.depthOrder);
  const { L, W, D, gateStart, gateEnd, depthOfWidth, sqrtTemplate, order } = t;
  const G = gateStart.length;
  if (logits.length !== rows * L) throw new ShapeError('logits have the wrong size', { field: 'logits', expected: rows * L, found: logits.length });
  if (out.length !== rows * L) throw new ShapeError('output has the wrong size', { field: 'out', expected: rows * L, found: out.length });
  if (noise && (!(noiseRows > 0) || noise.length !== noiseRows * L)) throw new ShapeError('noise has the wrong size', { field: 'noise', expected: noiseRows * L, found: noise.length });
  const T = f(options.temperature);
  const base = f(options.base);
  const eps = f(1e-6);
  const zero = new Float32Array(L);
  const soft = new Float32Array(W); // soft width gates of the current row (only where needed)
  const hard = new Uint8Array(W);
  const needSoft = new Uint8Array(W);
  for (let i = 0; i < W; i++) needSoft[i] = depthOfWidth[i]! >= 0 ? 1 : 0;
  const p = new Float64Array(D);
  const depth = new Float32Array(D); // soft depth gates in gate order (after the scatter)
  const exact = (l: number, g: number): number => sigmoid(f(f(f(l + g) + base) / T));
  for (let r = 0; r < rows; r++) {
    const o = r * L;
    const nz = noise ? noise : zero;
    const no = noise ? (r % noiseRows) * L : 0;
    // Width: s = σ(((ℓ + g) + base) / T) in float32. Where only hard(s) matters, the sign decides away from 0.
    for (let i = 0; i < W; i++) {
      const l = logits[o + i]!;
      const g = nz[no + i]!;
      if (needSoft[i] === 1) {
        const s = f(1 / (1 + Math.exp(-f(f(f(l + g) + base) / T))));
        soft[i] = s;
        hard[i] = s >= 0.5 ? 1 : 0;
      } else {
        // v ≥ 0 ⇒ z = v/T ≥ 0 ⇒ σ(z) ≥ 0.5; z < −1e−6 ⇒ σ(z) < 0.5 − 2e−7 even after float32 rounding.
        const v = f(f(l + g) + base);
        hard[i] = v >= 0 ? 1 : f(v / T) < -1e-6 ? 0 : exact(l, g) >= 0.5 ? 1 : 0;
      }
    }
    // Non-zero rule: a gate with no kept element gets +0.5 on its first element (σ ≥ 0, so that element is kept).
    if (options.nonZeroWidth) {
      for (let gi = 0; gi < G; gi++) {
        const s0 = gateStart[gi]!;
        const e0 = gateEnd[gi]!;
        let any = false;
        for (let i = s0; i < e0; i++) if (hard[i] === 1) { any = true; break; }
        if (!any && e0 > s0) {
          soft[s0] = f(exact(logits[o + s0]!, nz[no + s0]!) + 0.5);
          hard[s0] = soft[s0]! >= 0.5 ? 1 : 0;
        }
      }
    }
    // Depth: p = softmax(ℓ_d); x_j = cumsum(p)[D−1−j]; λ = log(x + ε) − log1p(−(x − ε)); t_j = σ((λ + g + base)/T).
    if (D > 0) {
      let mx = -Infinity;
      for (let j = 0; j < D; j++) mx = Math.max(mx, logits[o + W + j]!);
      let sum = 0;
      for (let j = 0; j < D; j++) {
        const e = f(Math.exp(f(logits[o + W + j]! - mx)));
        p[j] = e;
        sum += e;
      }
      const sumF = f(sum);
      let acc = 0;
      for (let j = 0; j < D; j++) {
        acc = j === 0 ? f(p[0]! / sumF) : f(acc + f(p[j]! / sumF));
        p[j] = acc; // cumsum in float32
      }
      for (let j = 0; j < D; j++) {
        const x = p[D - 1 - j]!;
        const lambda = f(f(Math.log(f(x + eps))) - f(Math.log1p(f(-f(x - eps)))));
        depth[order[j]!] = exact(lambda, nz[no + W + j]!);
      }
    }
    // N(s): hard gates; width entries of depth-gated sub-blocks → s_width·s_depth; × √(1/w). Then ÷ ‖·‖₂.
    let sq = 0;
    for (let i = 0; i < W; i++) {
      const k = depthOfWidth[i]!;
      let v: number;
      if (k >= 0) v = f(f(soft[i]! * depth[k]!) * sqrtTemplate[i]!);
      else v = hard[i] === 1 ? sqrtTemplate[i]! : 0;
      out[o + i] = v;
      sq += f(v * v);
    }
    for (let j = 0; j < D; j++) {
      const v = depth[j]! >= 0.5 ? sqrtTemplate[W + j]! : 0;
      out[o + W + j] = v;
      sq += f(v * v);
    }
    const norm = f(Math.sqrt(f(sq)));
    for (let i = 0; i < L; i++) out[o + i] = out[o + i]! / norm; // the Float32Array store rounds
  }
  return out;
}

/** `[L, K]` transposed row-normalised N(codes) of code gates `[K, L]` (zero noise is not applied: these are gates). */
export function normalizedCodesTransposed(codeGates: Float32Array, numCodes: number, layout: ArchitectureLayout): Float32Array {
  const t = gateTables(layout, Array.from({ length: layout.depthEntries }, (_, j) => j));
  const { L, W, D, depthOfWidth, sqrtTemplate } = t;
  if (codeGates.length !== numCodes * L) throw new ShapeError('code gates have the wrong size', { field: 'embeddingGs', expected: numCodes * L, found: codeGates.length });
  const out = new Float32Array(L * numCodes);
  const row = new Float32Array(L);
  for (let c = 0; c < numCodes; c++) {
    const o = c * L;
    let sq = 0;
    for (let i = 0; i < W; i++) {
      const k = depthOfWidth[i]!;
      const s = codeGates[o + i]!;
      const v = f((k >= 0 ? f(s * codeGates[o + W + k]!) : s >= 0.5 ? 1 : 0) * sqrtTemplate[i]!);
      row[i] = v;
      sq += f(v * v);
    }
    for (let j = 0; j < D; j++) {
      const v = f((codeGates[o + W + j]! >= 0.5 ? 1 : 0) * sqrtTemplate[W + j]!);
      row[W + j] = v;
      sq += f(v * v);
    }
    const norm = f(Math.sqrt(f(sq)));
    for (let i = 0; i < L; i++) out[i * numCodes + c] = f(row[i]! / norm);
  }
  return out;
}

export interface FastScoresInput {
  /** `[B, inputDim]` prompt embeddings. */
  x: Float32Array;
  batch: number;
  inputDim: number;
  /** `[inputDim, L]` predictor weight, or null with `arch` (single-architecture baseline). */
  weight: Float32Array | null;
  /** `[L]` predictor bias or null. */
  bias: Float32Array | null;
  /** `[L]` single-architecture logits (baseline), else null. */
  arch: Float32Array | null;
  /** Prompt-side Gumbel noise `[noiseRows, L]` (row b uses row `b mod noiseRows`), or null for zero noise. */
  noise: Float32Array | null;
  /** Rows of `noise` (default `batch`). */
  noiseRows?: number;
  /** `[K, L]` stored code samples (`embeddingGs`). */
  codeGates: Float32Array;
  numCodes: number;
  layout: ArchitectureLayout;
  gumbel: GumbelSigmoidOptions;
  /** The session that runs both matmuls (owned by the caller). */
  matmul: OrtMatMul;
}

/** `[B, K]` eval-mode cosine scores cos(N(GS(x·W + b; noise)), N(codes)) on onnxruntime + host loops. */
export async function fastRoutingScores(input: FastScoresInput): Promise<Float32Array> {
  const { batch: B, inputDim, layout, numCodes: K } = input;
  const L = layout.vectorLength;
  if (input.x.length !== B * inputDim) throw new ShapeError('prompt embeddings have the wrong size', { field: 'x', expected: B * inputDim, found: input.x.length });
  let logits: Float32Array;
  if (input.arch) {
    logits = new Float32Array(B * L);
    for (let b = 0; b < B; b++) logits.set(input.arch, b * L);
  } else {
    logits = await input.matmul.run(input.x, input.weight!, B, inputDim, L, input.bias ?? undefined);
  }
  const a = evalGatesNormalized(logits, input.noise, B, layout, input.gumbel, logits, input.noiseRows ?? B); // in place: logits are not needed after
  const ct = normalizedCodesTransposed(input.codeGates, K, layout);
  return input.matmul.run(a, ct, B, L, K);
}
