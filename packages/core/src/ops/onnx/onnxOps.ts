/**
 * `OnnxOps`: the {@link Ops} interface implemented by **emitting ONNX nodes** instead of computing (STYLE.md §2
 * `core/ops/onnx/onnxOps`). Model code written against `Ops` (the UNet blocks) is run once with an `OnnxOps`, and the
 * graph it leaves behind is the exported model: same block definitions, same numerics, no second copy of the
 * architecture.
 *
 * Layout (STYLE.md §3 "Tensors and layout"): feature maps are **NCHW** (the public diffusers layout, so
 * `fromNCHW`/`toNCHW` are identities), tokens `[B, S, C]`, per-sample vectors `[B, n]`. Weights are initializers in
 * their diffusers layout except linear weights, stored transposed `[I, O]` so a linear is one `MatMul` (+ `Add`).
 *
 * Dynamic sizes: graph inputs may carry symbolic dims (`'batch'`, `'height'`). `Ops` reports sizes as numbers, so a
 * symbolic dim is reported as a stable **negative** integer (the same name always gives the same number); passing it
 * back (`fromTokens(x, height, width)`) makes the graph read that size at run time with a `Shape` node. Derived
 * sizes (a stride-2 conv of `height`, an upsampled size) get derived names, so nothing ever needs the number itself.
 *
 * Kernel choices for ONNX Runtime 1.30 on CPU (measured; see the package README "ONNX export"):
 * - GroupNorm = `Reshape [B, G, −1]` → `InstanceNormalization` → `Reshape` → per-channel `Mul`/`Add`: ~3× faster
 *   than ORT's `GroupNormalization`-21 (a function expansion) and within 5e-6 of a float64 reference.
 * - Attention = `com.microsoft.MultiHeadAttention` (fused CPU kernel, ~10–15 % faster than the decomposition) by
 *   default; `attention: 'standard'` emits plain ONNX (Reshape/Transpose/MatMul/Softmax) for other runtimes.
 * - LayerNorm = `LayerNormalization`-17; GELU = `Gelu`-20 (exact erf) when the opset has it, else the erf formula.
 */
import { onnx } from 'onnx-proto';
import { InputError, ShapeError } from '../../errors';
import type { Ops } from '../ops';
import { OnnxGraph, type OnnxDim, type OnnxDtype, type OnnxTensorInit } from './graph';

/** A tensor of the graph being built: its name, element type and (possibly symbolic) shape. */
export interface OnnxValue {
  readonly name: string;
  readonly dtype: OnnxDtype;
  readonly shape: readonly OnnxDim[];
}

/** Host weights in the diffusers layout (`HostTensor`-compatible). */
export interface OnnxHostWeight {
  shape: readonly number[];
  data: ArrayLike<number>;
}

export interface OnnxOpsOptions {
  /** Graph name (default `main`). */
  graphName?: string;
  /** Default-domain opset (default 21; at least 17 for `LayerNormalization`). */
  opset?: number;
  /** IR version (default 10, what opset 21 requires; ORT 1.30 reads up to 11). */
  irVersion?: number;
  /** `fused` (default): `com.microsoft.MultiHeadAttention`; `standard`: plain ONNX ops only. */
  attention?: 'fused' | 'standard';
  /** Storage type of weight initializers (default float32); float16 halves the file, math stays float32. */
  weightDtype?: 'float32' | 'float16';
  /** `ModelProto.doc_string`. */
  docString?: string;
}

const MIN_OPSET = 17;
/** External-data offsets are multiples of this (page size: lets a runtime map the file). */
const EXTERNAL_ALIGN = 4096;

/** `OnnxOps`: builds one ONNX graph from model code written against {@link Ops}. */
export class OnnxOps implements Ops<OnnxValue> {
  readonly name = 'onnx';
  readonly layout = 'NCHW' as const;
  readonly graph: OnnxGraph;
  readonly opset: number;
  readonly attentionKind: 'fused' | 'standard';
  readonly weightDtype: 'float32' | 'float16';
  /** Symbolic dim names; name k is reported as the number −(k+1). */
  private readonly symbols: string[] = [];
  /** For each symbolic dim: the first value carrying it and the axis (to read it at run time). */
  private readonly symbolSource = new Map<string, { value: string; axis: number }>();
  private readonly runtimeDims = new Map<string, string>();
  private readonly constants = new Map<string, string>();
  private weightByteCount = 0;

  constructor(options: OnnxOpsOptions = {}) {
    this.opset = options.opset ?? 21;
    if (!Number.isInteger(this.opset) || this.opset < MIN_OPSET) {
      throw new InputError('unsupported ONNX opset', { field: 'opset', expected: `an integer >= ${MIN_OPSET}`, found: options.opset });
    }
    this.attentionKind = options.attention ?? 'fused';
    this.weightDtype = options.weightDtype ?? 'float32';
    this.graph = new OnnxGraph(options.graphName ?? 'main', {
      opset: this.opset,
      irVersion: options.irVersion ?? 10,
      domains: this.attentionKind === 'fused' ? { 'com.microsoft': 1 } : {},
      docString: options.docString,
    });
  }

  // ---- graph boundary ------------------------------------------------------------------------------------------

  /** Declares a graph input (dims may be symbolic names). */
  input(name: string, dtype: OnnxDtype, shape: readonly OnnxDim[]): OnnxValue {
    this.graph.input(name, dtype, shape);
    return this.value(name, dtype, shape);
  }

  /** Declares `x` as a graph output named `name` (through an `Identity`, so any value can be exported). */
  output(x: OnnxValue, name: string, shape: readonly OnnxDim[] = x.shape): OnnxValue {
    this.graph.op('Identity', [x.name], {}, { output: name });
    this.graph.output(name, x.dtype, shape);
    return this.value(name, x.dtype, x.shape);
  }

  /** The serialised model (weights inline). */
  toBytes(): Uint8Array {
    return this.graph.toBytes();
  }

  /**
   * Serialises the model, optionally with ONNX **external data**: every initializer of at least `minBytes` (default
   * 1 KiB) moves into `data` (to be written as the file `externalData`, next to the model; offsets page-aligned), so
   * models past the 2 GiB protobuf limit (SD 2.1 fp32: 3.4 GB) can be written and loaded from a path.
   * `metadata` becomes `ModelProto.metadata_props`.
   */
  serialize(options: { externalData?: string; minBytes?: number; metadata?: Record<string, string> } = {}): { model: Uint8Array; data: Uint8Array[] } {
    const model = this.graph.toModel();
    model.metadataProps = Object.entries(options.metadata ?? {}).map(([key, value]) => ({ key, value }));
    const data: Uint8Array[] = [];
    if (options.externalData !== undefined) {
      const minBytes = options.minBytes ?? 1024;
      let offset = 0;
      // new TensorProtos: the graph's own initializers keep their data (serialize can be called again)
      const graph = model.graph!;
      graph.initializer = graph.initializer!.map((t) => {
        const raw = t.rawData;
        if (!raw || raw.byteLength < minBytes) return t;
        const pad = (EXTERNAL_ALIGN - (offset % EXTERNAL_ALIGN)) % EXTERNAL_ALIGN;
        if (pad > 0) data.push(new Uint8Array(pad));
        offset += pad;
        data.push(raw);
        const moved = onnx.TensorProto.create({
          name: t.name,
          dataType: t.dataType,
          dims: t.dims,
          dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
          externalData: [
            { key: 'location', value: options.externalData! },
            { key: 'offset', value: String(offset) },
            { key: 'length', value: String(raw.byteLength) },
          ],
        });
        offset += raw.byteLength;
        return moved;
      });
    }
    try {
      return { model: onnx.ModelProto.encode(model).finish(), data };
    } catch (err) {
      throw new InputError('cannot serialise the ONNX model (over the 2 GiB protobuf limit? use externalData)', { code: 'E_ONNX_ENCODE', field: this.graph.name, cause: err });
    }
  }

  /** Bytes of all weight initializers (to decide on external data). */
  get weightBytes(): number {
    return this.weightByteCount;
  }

  /** A constant tensor (an initializer). */
  constant(t: OnnxTensorInit, prefix = 'const'): OnnxValue {
    const name = this.graph.constant(t, prefix);
    return this.value(name, t.dtype ?? (t.data instanceof BigInt64Array ? 'int64' : 'float32'), t.dims);
  }

  // ---- weights (the TensorFactory of an exporter calls these) ---------------------------------------------------

  /** Conv weight `[O, I, kh, kw]`, kept in that layout. */
  convWeight(w: OnnxHostWeight, key?: string): OnnxValue {
    if (w.shape.length !== 4) throw new ShapeError('conv weight must be [O, I, kh, kw]', { field: key, found: w.shape });
    return this.weight(w.data, w.shape, key);
  }

  /** Linear weight `[O, I]` (diffusers), stored transposed as `[I, O]` (the `linear` layout). */
  linearWeight(w: OnnxHostWeight, key?: string): OnnxValue {
    if (w.shape.length !== 2) throw new ShapeError('linear weight must be [O, I]', { field: key, found: w.shape });
    const [o, i] = w.shape as [number, number];
    const t = new Float32Array(o * i);
    for (let a = 0; a < o; a++) for (let b = 0; b < i; b++) t[b * o + a] = w.data[a * i + b]!;
    return this.weight(t, [i, o], key);
  }

  /** A bias or norm vector `[C]` (or a `[1, C]` row, e.g. a learned embedding added to `[B, C]` vectors). */
  vectorWeight(v: OnnxHostWeight, key?: string): OnnxValue {
    const row = v.shape.length === 2 && v.shape[0] === 1;
    if (v.shape.length !== 1 && !row) throw new ShapeError('vector weight must be [C] or [1, C]', { field: key, found: v.shape });
    return this.weight(v.data, v.shape, key);
  }

  private weight(data: ArrayLike<number>, dims: readonly number[], key?: string): OnnxValue {
    const f32 = data instanceof Float32Array ? data : Float32Array.from(data);
    this.weightByteCount += f32.length * (this.weightDtype === 'float32' ? 4 : 2);
    const stored = key ?? this.graph.uniqueName('weight');
    if (this.weightDtype === 'float32') {
      this.graph.initializer(stored, { dtype: 'float32', dims, data: f32 });
      return this.value(stored, 'float32', dims);
    }
    this.graph.initializer(stored, { dtype: 'float16', dims, data: f32 });
    return this.value(this.graph.op('Cast', [stored], { to: 1 }), 'float32', dims);
  }

  // ---- Ops: scope and boundaries ----------------------------------------------------------------------------------

  scope<R>(fn: () => R): R {
    return fn();
  }

  fromNCHW(x: OnnxValue): OnnxValue {
    this.rank(x, 4, 'fromNCHW');
    return x;
  }

  toNCHW(x: OnnxValue): OnnxValue {
    this.rank(x, 4, 'toNCHW');
    return x;
  }

  featureSize(x: OnnxValue): { batch: number; height: number; width: number; channels: number } {
    const [b, c, h, w] = this.rank(x, 4, 'featureSize');
    return { batch: this.num(b), channels: this.num(c), height: this.num(h), width: this.num(w) };
  }

  toTokens(x: OnnxValue): OnnxValue {
    const [b, c, h, w] = this.rank(x, 4, 'toTokens');
    const flat = this.op('Reshape', [x.name, this.i64([0, 0, -1])], {}, [b, c, mulDim(h, w)]);
    return this.op('Transpose', [flat.name], { perm: [0, 2, 1] }, [b, mulDim(h, w), c]);
  }

  fromTokens(x: OnnxValue, height: number, width: number): OnnxValue {
    const [b, , c] = this.rank(x, 3, 'fromTokens');
    const t = this.op('Transpose', [x.name], { perm: [0, 2, 1] }, [b, c, x.shape[1]!]);
    let shape: string;
    if (height >= 0 || width >= 0) {
      // at most one run-time size: −1 lets Reshape infer it
      shape = this.i64([0, 0, height >= 0 ? height : -1, height >= 0 ? (width >= 0 ? width : -1) : width]);
    } else {
      shape = this.graph.op('Concat', [this.i64([0, 0]), this.runtimeDim(this.dim(height)), this.i64([-1])], { axis: 0 });
    }
    return this.op('Reshape', [t.name, shape], {}, [b, c, this.dim(height), this.dim(width)]);
  }

  // ---- Ops: layers ------------------------------------------------------------------------------------------------

  conv2d(x: OnnxValue, w: OnnxValue, bias: OnnxValue | null, options: { stride?: number; padding: number }): OnnxValue {
    const [b, , h, wd] = this.rank(x, 4, 'conv2d');
    const [o, , kh, kw] = this.rank(w, 4, 'conv2d weight') as [number, number, number, number];
    const s = options.stride ?? 1;
    const p = options.padding;
    const inputs = bias ? [x.name, w.name, bias.name] : [x.name, w.name];
    const attrs = { kernel_shape: [kh, kw], pads: [p, p, p, p], strides: [s, s] };
    return this.op('Conv', inputs, attrs, [b, o, convDim(h, kh, s, p), convDim(wd, kw, s, p)]);
  }

  linear(x: OnnxValue, w: OnnxValue, bias: OnnxValue | null): OnnxValue {
    const [, o] = this.rank(w, 2, 'linear weight');
    const shape = [...x.shape.slice(0, -1), o];
    const y = this.op('MatMul', [x.name, w.name], {}, shape);
    return bias ? this.op('Add', [y.name, bias.name], {}, shape) : y;
  }

  groupNorm(x: OnnxValue, gamma: OnnxValue, beta: OnnxValue, groups: number, eps: number): OnnxValue {
    const [, c] = this.rank(x, 4, 'groupNorm');
    if (typeof c !== 'number' || c % groups !== 0) {
      throw new ShapeError('groupNorm: channels must be a multiple of groups', { field: x.name, expected: `a multiple of ${groups}`, found: c });
    }
    const grouped = this.graph.op('Reshape', [x.name, this.i64([0, groups, -1])]);
    const ones = this.cached(`ones${groups}`, () => this.graph.constant({ dtype: 'float32', dims: [groups], data: new Float32Array(groups).fill(1) }, 'ones'));
    const zeros = this.cached(`zeros${groups}`, () => this.graph.constant({ dtype: 'float32', dims: [groups], data: new Float32Array(groups) }, 'zeros'));
    const normed = this.graph.op('InstanceNormalization', [grouped, ones, zeros], { epsilon: { float: eps } });
    const back = this.graph.op('Reshape', [normed, this.graph.op('Shape', [x.name])]);
    const scaled = this.graph.op('Mul', [back, this.channelVector(gamma)]);
    return this.op('Add', [scaled, this.channelVector(beta)], {}, x.shape);
  }

  layerNorm(x: OnnxValue, gamma: OnnxValue, beta: OnnxValue, eps: number): OnnxValue {
    return this.op('LayerNormalization', [x.name, gamma.name, beta.name], { axis: -1, epsilon: { float: eps } }, x.shape);
  }

  attention(q: OnnxValue, k: OnnxValue, v: OnnxValue, heads: number): OnnxValue {
    const [b, s, c] = this.rank(q, 3, 'attention q');
    this.rank(k, 3, 'attention k');
    this.rank(v, 3, 'attention v');
    if (typeof c !== 'number' || c % heads !== 0) {
      throw new ShapeError('attention: channels must be whole heads', { field: q.name, expected: `a multiple of ${heads}`, found: c });
    }
    const shape = [b, s, c];
    if (this.attentionKind === 'fused') {
      return this.op('MultiHeadAttention', [q.name, k.name, v.name], { num_heads: heads }, shape, 'com.microsoft');
    }
    const d = c / heads;
    const split = this.i64([0, 0, heads, d]);
    const qh = this.graph.op('Transpose', [this.graph.op('Reshape', [q.name, split])], { perm: [0, 2, 1, 3] }); // [B, h, S, d]
    const kt = this.graph.op('Transpose', [this.graph.op('Reshape', [k.name, split])], { perm: [0, 2, 3, 1] }); // [B, h, d, T]
    const vh = this.graph.op('Transpose', [this.graph.op('Reshape', [v.name, split])], { perm: [0, 2, 1, 3] }); // [B, h, T, d]
    const logits = this.graph.op('Mul', [this.graph.op('MatMul', [qh, kt]), this.scalar(1 / Math.sqrt(d))]);
    const probs = this.graph.op('Softmax', [logits], { axis: -1 });
    const out = this.graph.op('Transpose', [this.graph.op('MatMul', [probs, vh])], { perm: [0, 2, 1, 3] }); // [B, S, h, d]
    return this.op('Reshape', [out, this.i64([0, 0, c])], {}, shape);
  }

  upsampleNearest2x(x: OnnxValue): OnnxValue {
    const [b, c, h, w] = this.rank(x, 4, 'upsampleNearest2x');
    const scales = this.cached('scales2x', () => this.graph.constant({ dtype: 'float32', dims: [4], data: Float32Array.of(1, 1, 2, 2) }, 'scales'));
    const attrs = { mode: 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' };
    return this.op('Resize', [x.name, '', scales], attrs, [b, c, mulDim(2, h), mulDim(2, w)]);
  }

  timestepEmbedding(timesteps: OnnxValue, dim: number, flipSinToCos: boolean, freqShift: number): OnnxValue {
    const [b] = this.rank(timesteps, 1, 'timestepEmbedding');
    const half = Math.floor(dim / 2);
    // diffusers evaluates the frequencies in float32: exp((−ln 10000 · i) / (half − shift)) (same as EagerOps).
    const freqs = new Float32Array(half);
    const negLog = Math.fround(-Math.log(10000));
    for (let i = 0; i < half; i++) freqs[i] = Math.fround(Math.exp(Math.fround(Math.fround(negLog * i) / Math.fround(half - freqShift))));
    const t = timesteps.dtype === 'float32' ? timesteps.name : this.graph.op('Cast', [timesteps.name], { to: 1 });
    const col = this.graph.op('Unsqueeze', [t, this.i64([1])]); // [B, 1]
    const arg = this.graph.op('Mul', [col, this.graph.constant({ dtype: 'float32', dims: [1, half], data: freqs }, 'freqs')]);
    const sin = this.graph.op('Sin', [arg]);
    const cos = this.graph.op('Cos', [arg]);
    const emb = this.graph.op('Concat', flipSinToCos ? [cos, sin] : [sin, cos], { axis: 1 });
    if (dim % 2 === 0) return this.value(emb, 'float32', [b, dim]);
    return this.op('Pad', [emb, this.i64([0, 0, 0, 1])], {}, [b, dim]);
  }

  // ---- Ops: elementwise -------------------------------------------------------------------------------------------

  add(a: OnnxValue, b: OnnxValue): OnnxValue {
    return this.op('Add', [a.name, b.name], {}, broadcastShape(a.shape, b.shape, 'add'));
  }

  mul(a: OnnxValue, b: OnnxValue): OnnxValue {
    return this.op('Mul', [a.name, b.name], {}, broadcastShape(a.shape, b.shape, 'mul'));
  }

  scale(x: OnnxValue, s: number): OnnxValue {
    return this.op('Mul', [x.name, this.scalar(s)], {}, x.shape);
  }

  silu(x: OnnxValue): OnnxValue {
    return this.op('Mul', [x.name, this.graph.op('Sigmoid', [x.name])], {}, x.shape);
  }

  gelu(x: OnnxValue): OnnxValue {
    if (this.opset >= 20) return this.op('Gelu', [x.name], { approximate: 'none' }, x.shape);
    const erf = this.graph.op('Erf', [this.graph.op('Mul', [x.name, this.scalar(Math.SQRT1_2)])]);
    const half = this.graph.op('Mul', [x.name, this.scalar(0.5)]);
    return this.op('Mul', [half, this.graph.op('Add', [erf, this.scalar(1)])], {}, x.shape);
  }

  // ---- Ops: channel ops -------------------------------------------------------------------------------------------

  concatChannels(xs: OnnxValue[]): OnnxValue {
    if (xs.length === 0) throw new InputError('concatChannels needs at least one input', { field: 'xs' });
    if (xs.length === 1) return xs[0]!;
    const axis = this.channelAxis(xs[0]!);
    const shape = [...xs[0]!.shape];
    let channels = 0;
    for (const x of xs) {
      const c = x.shape[axis];
      if (typeof c !== 'number' || x.shape.length !== shape.length) {
        throw new ShapeError('concatChannels: inputs must have the same rank and static channels', { field: x.name, found: x.shape });
      }
      channels += c;
    }
    shape[axis] = channels;
    return this.op('Concat', xs.map((x) => x.name), { axis }, shape);
  }

  sliceChannels(x: OnnxValue, start: number, size: number): OnnxValue {
    const axis = this.channelAxis(x);
    const c = x.shape[axis];
    if (typeof c !== 'number' || start < 0 || size < 1 || start + size > c) {
      throw new ShapeError('sliceChannels out of range', { field: x.name, expected: `[start, start+size) within ${c} channels`, found: [start, start + size] });
    }
    const shape = [...x.shape];
    shape[axis] = size;
    return this.op('Slice', [x.name, this.i64([start]), this.i64([start + size]), this.i64([axis])], {}, shape);
  }

  addChannels(x: OnnxValue, v: OnnxValue): OnnxValue {
    return this.op('Add', [x.name, this.perSample(v, x)], {}, x.shape);
  }

  scaleChannels(x: OnnxValue, g: OnnxValue): OnnxValue {
    return this.op('Mul', [x.name, this.perSample(g, x)], {}, x.shape);
  }

  expandGroups(g: OnnxValue, groupSize: number): OnnxValue {
    const [b, w] = this.rank(g, 2, 'expandGroups');
    if (groupSize === 1) return g;
    const col = this.graph.op('Unsqueeze', [g.name, this.i64([2])]); // [B, w, 1]
    const wide = this.graph.op('Expand', [col, this.i64([1, 1, groupSize])]); // [B, w, groupSize]
    return this.op('Reshape', [wide, this.i64([0, -1])], {}, [b, mulDim(w, groupSize)]);
  }

  // ---- Ops: token ops ---------------------------------------------------------------------------------------------

  meanTokens(x: OnnxValue): OnnxValue {
    const [b, , c] = this.rank(x, 3, 'meanTokens');
    // ReduceMean takes its axes as an input from opset 18 on, as an attribute before
    const mean =
      this.opset >= 18
        ? this.graph.op('ReduceMean', [x.name, this.i64([1])], { keepdims: 0 })
        : this.graph.op('ReduceMean', [x.name], { axes: [1], keepdims: 0 });
    return this.value(mean, 'float32', [b!, c!]);
  }

  asToken(v: OnnxValue): OnnxValue {
    const [b, c] = this.rank(v, 2, 'asToken');
    return this.op('Unsqueeze', [v.name, this.i64([1])], {}, [b!, 1, c!]);
  }

  concatTokens(xs: OnnxValue[]): OnnxValue {
    if (xs.length === 0) throw new InputError('concatTokens needs at least one input', { field: 'xs' });
    if (xs.length === 1) return xs[0]!;
    const [b, , c] = this.rank(xs[0]!, 3, 'concatTokens');
    let tokens: OnnxDim = 0;
    for (const x of xs) {
      const [, s, cx] = this.rank(x, 3, 'concatTokens');
      if (cx !== c) throw new ShapeError('concatTokens: inputs must have the same channels', { field: x.name, expected: c, found: cx });
      tokens = addDim(tokens, s!);
    }
    return this.op('Concat', xs.map((x) => x.name), { axis: 1 }, [b!, tokens, c!]);
  }

  // ---- Ops: batch ops ---------------------------------------------------------------------------------------------

  blend(x: OnnxValue, fx: OnnxValue, d: OnnxValue): OnnxValue {
    this.rank(d, 1, 'blend depth');
    const dd = this.graph.op('Reshape', [d.name, this.i64([-1, ...new Array<number>(x.shape.length - 1).fill(1)])]);
    const keep = this.graph.op('Sub', [this.scalar(1), dd]);
    const a = this.graph.op('Mul', [x.name, keep]);
    const bb = this.graph.op('Mul', [fx.name, dd]);
    return this.op('Add', [a, bb], {}, broadcastShape(x.shape, fx.shape, 'blend'));
  }

  repeatBatch(x: OnnxValue, times: number): OnnxValue {
    if (!Number.isInteger(times) || times < 1) throw new InputError('repeatBatch: times must be a positive integer', { field: 'times', found: times });
    if (times === 1) return x;
    const shape = [mulDim(times, x.shape[0]!), ...x.shape.slice(1)];
    return this.op('Concat', new Array<string>(times).fill(x.name), { axis: 0 }, shape);
  }

  batchSize(x: OnnxValue): number {
    if (x.shape.length === 0) throw new ShapeError('batchSize of a scalar', { field: x.name });
    return this.num(x.shape[0]!);
  }

  // ---- internals --------------------------------------------------------------------------------------------------

  /** Emits one node and wraps its output. */
  private op(opType: string, inputs: readonly string[], attrs: Parameters<OnnxGraph['op']>[2], shape: readonly OnnxDim[], domain?: string): OnnxValue {
    const name = this.graph.op(opType, inputs, attrs, domain !== undefined ? { domain } : {});
    return this.value(name, 'float32', shape);
  }

  private value(name: string, dtype: OnnxDtype, shape: readonly OnnxDim[]): OnnxValue {
    shape.forEach((d, axis) => {
      if (typeof d === 'string' && !this.symbolSource.has(d)) this.symbolSource.set(d, { value: name, axis });
    });
    return Object.freeze({ name, dtype, shape: Object.freeze([...shape]) });
  }

  private rank(x: OnnxValue, r: number, where: string): readonly OnnxDim[] {
    if (x.shape.length !== r) throw new ShapeError(`${where}: expected rank ${r}`, { field: x.name, expected: `rank ${r}`, found: `[${x.shape.join(',')}]` });
    return x.shape;
  }

  private channelAxis(x: OnnxValue): number {
    return x.shape.length === 4 ? 1 : x.shape.length - 1;
  }

  /** A size as `Ops` reports it: the number, or the stable negative id of a symbolic dim. */
  private num(d: OnnxDim): number {
    if (typeof d === 'number') return d;
    let k = this.symbols.indexOf(d);
    if (k < 0) k = this.symbols.push(d) - 1;
    return -(k + 1);
  }

  /** Inverse of `num`. */
  private dim(n: number): OnnxDim {
    if (n >= 0) return n;
    const s = this.symbols[-n - 1];
    if (s === undefined) throw new ShapeError('unknown symbolic size (not reported by this OnnxOps)', { field: 'size', found: n });
    return s;
  }

  /** An int64 `[1]` tensor holding a symbolic dim at run time (a `Shape` slice of a value that has it). */
  private runtimeDim(d: OnnxDim): string {
    if (typeof d === 'number') return this.i64([d]);
    const cached = this.runtimeDims.get(d);
    if (cached) return cached;
    const src = this.symbolSource.get(d);
    if (!src) throw new ShapeError('symbolic size has no source value', { field: d });
    const name = this.graph.op('Shape', [src.value], { start: src.axis, end: src.axis + 1 });
    this.runtimeDims.set(d, name);
    return name;
  }

  /** `[B, C]` → broadcastable against x (`[B, C, 1, 1]` maps, `[B, 1, C]` tokens, `[B, C]` vectors). */
  private perSample(v: OnnxValue, x: OnnxValue): string {
    this.rank(v, 2, 'per-sample channel vector');
    if (x.shape.length === 4) return this.graph.op('Unsqueeze', [v.name, this.i64([2, 3])]);
    if (x.shape.length === 3) return this.graph.op('Unsqueeze', [v.name, this.i64([1])]);
    return v.name;
  }

  /** `[C]` → `[C, 1, 1]` (per-channel factor of an NCHW map). */
  private channelVector(v: OnnxValue): string {
    return this.cached(`cv:${v.name}`, () => this.graph.op('Unsqueeze', [v.name, this.i64([1, 2])]));
  }

  private i64(values: readonly number[]): string {
    return this.cached(`i64:${values.join(',')}`, () => this.graph.constant({ dtype: 'int64', dims: [values.length], data: values }, 'shape'));
  }

  private scalar(x: number): string {
    return this.cached(`f32:${x}`, () => this.graph.constant({ dtype: 'float32', dims: [], data: Float32Array.of(x) }, 'scalar'));
  }

  private cached(key: string, make: () => string): string {
    let v = this.constants.get(key);
    if (v === undefined) {
      v = make();
      this.constants.set(key, v);
    }
    return v;
  }
}

// ---- symbolic shape arithmetic (names only: the graph computes the numbers) ------------------------------------

function mulDim(a: OnnxDim, b: OnnxDim): OnnxDim {
  if (typeof a === 'number' && typeof b === 'number') return a * b;
  return `${a}*${b}`;
}

function addDim(a: OnnxDim, b: OnnxDim): OnnxDim {
  if (typeof a === 'number' && typeof b === 'number') return a + b;
  return `${a}+${b}`;
}

function convDim(d: OnnxDim, k: number, s: number, p: number): OnnxDim {
  if (typeof d === 'number') return Math.floor((d + 2 * p - k) / s) + 1;
  if (s === 1 && 2 * p === k - 1) return d;
  return `conv_k${k}s${s}p${p}(${d})`;
}

function broadcastShape(a: readonly OnnxDim[], b: readonly OnnxDim[], where: string): OnnxDim[] {
  const n = Math.max(a.length, b.length);
  const out: OnnxDim[] = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    if (x === 1) out.push(y);
    else if (y === 1 || x === y || typeof y === 'string') out.push(x);
    else if (typeof x === 'string') out.push(y);
    else throw new ShapeError(`${where}: shapes do not broadcast`, { expected: `[${a.join(',')}]`, found: `[${b.join(',')}]` });
  }
  return out;
}
