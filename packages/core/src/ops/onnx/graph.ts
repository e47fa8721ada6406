/**
 * A small typed builder over onnx-proto: graph inputs/outputs with dtype and shape (symbolic dims allowed),
 * initializers from typed arrays (stored as little-endian `rawData`), nodes with attributes, opset / IR version,
 * `toBytes()`. Used by tests to build tiny models and by the ONNX exporter (STYLE.md §2 `core/ops/onnx/graph`).
 *
 * Attributes: a plain integer is INT, an integer array INTS, a string STRING, a string array STRINGS; floats must be
 * explicit (`{ float: 1 }`, `{ floats: [...] }`) because `1` and `1.0` are the same JS number; `{ tensor }` is TENSOR.
 */
import { onnx } from 'onnx-proto';
import { InputError } from '../../errors';
import { f32ToF16 } from '../../io/safetensors';

export type OnnxDtype = 'float32' | 'float64' | 'float16' | 'int64' | 'int32' | 'uint8' | 'bool';
/** A dimension: a size, or a symbolic name such as `'batch'`. */
export type OnnxDim = number | string;

export interface OnnxTensorInit {
  /** Default: from the array type (Float32Array → float32, Float64Array → float64, BigInt64Array → int64, ...). */
  dtype?: OnnxDtype;
  dims: readonly number[];
  /** Flat row-major values; `float16` takes float32 values and converts them. Plain arrays need `dtype`. */
  data: Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array | readonly number[];
}

export type OnnxAttr =
  | number
  | readonly number[]
  | string
  | readonly string[]
  | { float: number }
  | { floats: readonly number[] }
  | { tensor: OnnxTensorInit };

export interface OnnxNodeOptions {
  /** Output names, or a count of outputs to name automatically (default 1 auto-named output). */
  outputs?: number | readonly string[];
  /** Node name (default `<opType>_<n>`). */
  name?: string;
  /** Operator domain (default: the ONNX domain ''). */
  domain?: string;
}

export interface OnnxGraphOptions {
  /** Default-domain opset (default 17). */
  opset?: number;
  /** Model IR version (default 8, the newest onnx-proto 8.0.1 knows; ORT 1.30 accepts up to 10). */
  irVersion?: number;
  /** Extra operator domains, e.g. `{ 'com.microsoft': 1 }`. */
  domains?: Record<string, number>;
  producerName?: string;
  docString?: string;
}

const DT = onnx.TensorProto.DataType;
const ELEM: Record<OnnxDtype, onnx.TensorProto.DataType> = {
  float32: DT.FLOAT,
  float64: DT.DOUBLE,
  float16: DT.FLOAT16,
  int64: DT.INT64,
  int32: DT.INT32,
  uint8: DT.UINT8,
  bool: DT.BOOL,
};

function inferDtype(t: OnnxTensorInit, where: string): OnnxDtype {
  if (t.dtype !== undefined) return t.dtype;
  if (t.data instanceof Float32Array) return 'float32';
  if (t.data instanceof Float64Array) return 'float64';
  if (t.data instanceof BigInt64Array) return 'int64';
  if (t.data instanceof Int32Array) return 'int32';
  if (t.data instanceof Uint8Array) return 'uint8';
  throw new InputError('plain-array tensor data needs a dtype', { field: where, expected: Object.keys(ELEM) });
}

function bytesOf(view: ArrayBufferView): Uint8Array {
  // Copy the exact byte range (the view may sit inside a larger buffer). Little-endian hosts only (x64, arm64).
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength).slice();
}

/** Encodes a tensor as an onnx `TensorProto` with `rawData` (little-endian). */
export function onnxTensor(name: string, t: OnnxTensorInit): onnx.TensorProto {
  const dtype = inferDtype(t, name);
  const size = t.dims.reduce((a, b) => a * b, 1);
  if (t.data.length !== size) {
    throw new InputError('tensor data length does not match dims', {
      field: name,
      expected: `${size} elements for [${t.dims.join(',')}]`,
      found: t.data.length,
    });
  }
  const d = t.data;
  let raw: Uint8Array;
  switch (dtype) {
    case 'float32':
      raw = bytesOf(d instanceof Float32Array ? d : Float32Array.from(d as ArrayLike<number>));
      break;
    case 'float64':
      raw = bytesOf(d instanceof Float64Array ? d : Float64Array.from(d as ArrayLike<number>));
      break;
    case 'float16': {
      const h = new Uint16Array(size);
      for (let i = 0; i < size; i++) h[i] = f32ToF16(Number(d[i]));
      raw = bytesOf(h);
      break;
    }
    case 'int64': {
      if (d instanceof BigInt64Array) raw = bytesOf(d);
      else {
        const b = new BigInt64Array(size);
        for (let i = 0; i < size; i++) {
          const v = Number(d[i]);
          if (!Number.isSafeInteger(v)) throw new InputError('int64 value is not an integer', { field: `${name}[${i}]`, found: v });
          b[i] = BigInt(v);
        }
        raw = bytesOf(b);
      }
      break;
    }
    case 'int32':
      raw = bytesOf(d instanceof Int32Array ? d : Int32Array.from(d as ArrayLike<number>));
      break;
    case 'uint8':
    case 'bool':
      raw = bytesOf(d instanceof Uint8Array ? d : Uint8Array.from(d as ArrayLike<number>));
      break;
  }
  return onnx.TensorProto.create({ name, dataType: ELEM[dtype], dims: [...t.dims], rawData: raw });
}

function valueInfo(name: string, dtype: OnnxDtype, shape: readonly OnnxDim[] | undefined): onnx.ValueInfoProto {
  const tensorType: onnx.TypeProto.ITensor = { elemType: ELEM[dtype] };
  if (shape !== undefined) {
    tensorType.shape = {
      dim: shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })),
    };
  }
  return onnx.ValueInfoProto.create({ name, type: { tensorType } });
}

function attribute(name: string, v: OnnxAttr, where: string): onnx.AttributeProto {
  const A = onnx.AttributeProto.AttributeType;
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v)) {
      throw new InputError('a plain number attribute is an INT; wrap floats as { float: x }', { field: `${where}.${name}`, found: v });
    }
    return onnx.AttributeProto.create({ name, type: A.INT, i: v });
  }
  if (typeof v === 'string') return onnx.AttributeProto.create({ name, type: A.STRING, s: new TextEncoder().encode(v) });
  if (Array.isArray(v)) {
    if (v.every((x) => typeof x === 'string')) {
      return onnx.AttributeProto.create({ name, type: A.STRINGS, strings: (v as string[]).map((s) => new TextEncoder().encode(s)) });
    }
    for (const x of v as number[]) {
      if (!Number.isSafeInteger(x)) {
        throw new InputError('a plain number array attribute is INTS; wrap floats as { floats: [...] }', { field: `${where}.${name}`, found: v });
      }
    }
    return onnx.AttributeProto.create({ name, type: A.INTS, ints: [...(v as number[])] });
  }
  const o = v as { float?: number; floats?: readonly number[]; tensor?: OnnxTensorInit };
  if (o.float !== undefined) return onnx.AttributeProto.create({ name, type: A.FLOAT, f: o.float });
  if (o.floats !== undefined) return onnx.AttributeProto.create({ name, type: A.FLOATS, floats: [...o.floats] });
  if (o.tensor !== undefined) return onnx.AttributeProto.create({ name, type: A.TENSOR, t: onnxTensor(name, o.tensor) });
  throw new InputError('unsupported attribute value', { field: `${where}.${name}`, found: v });
}

/** Builds one ONNX model graph. Tensor names are global to the graph and must be unique. */
export class OnnxGraph {
  private readonly inputs: onnx.ValueInfoProto[] = [];
  private readonly outputs: onnx.ValueInfoProto[] = [];
  private readonly initializers: onnx.TensorProto[] = [];
  private readonly nodes: onnx.NodeProto[] = [];
  /** Every defined tensor name (inputs, initializers, node outputs). */
  private readonly defined = new Set<string>();
  private readonly counters = new Map<string, number>();
  readonly opset: number;
  readonly irVersion: number;

  constructor(
    readonly name = 'main',
    private readonly options: OnnxGraphOptions = {},
  ) {
    this.opset = options.opset ?? 17;
    this.irVersion = options.irVersion ?? 8;
  }

  /** A fresh tensor name `<prefix>_<n>` not used yet. */
  uniqueName(prefix: string): string {
    for (;;) {
      const n = this.counters.get(prefix) ?? 0;
      this.counters.set(prefix, n + 1);
      const name = `${prefix}_${n}`;
      if (!this.defined.has(name)) return name;
    }
  }

  /** Declares a graph input; returns its name. */
  input(name: string, dtype: OnnxDtype, shape: readonly OnnxDim[]): string {
    this.define(name, 'input');
    this.inputs.push(valueInfo(name, dtype, shape));
    return name;
  }

  /** Declares a graph output (a tensor some node produces, or an input / initializer); shape optional. */
  output(name: string, dtype: OnnxDtype, shape?: readonly OnnxDim[]): string {
    if (this.outputs.some((o) => o.name === name)) throw new InputError('duplicate graph output', { field: name });
    this.outputs.push(valueInfo(name, dtype, shape));
    return name;
  }

  /** Adds a constant weight (stored as `rawData`); returns its name. */
  initializer(name: string, t: OnnxTensorInit): string {
    this.define(name, 'initializer');
    this.initializers.push(onnxTensor(name, t));
    return name;
  }

  /** An initializer with an automatic name. */
  constant(t: OnnxTensorInit, prefix = 'const'): string {
    return this.initializer(this.uniqueName(prefix), t);
  }

  /**
   * Adds a node; returns its output names. Inputs must already be defined ('' marks an omitted optional input).
   */
  node(opType: string, inputs: readonly string[], attrs: Record<string, OnnxAttr> = {}, opts: OnnxNodeOptions = {}): string[] {
    const nodeName = opts.name ?? this.uniqueName(opType);
    for (const i of inputs) {
      if (i !== '' && !this.defined.has(i)) {
        throw new InputError('node input is not defined yet', { field: `${nodeName}(${opType})`, found: i });
      }
    }
    const outs = opts.outputs ?? 1;
    const outputs = typeof outs === 'number' ? Array.from({ length: outs }, (_, k) => `${nodeName}_out${k}`) : [...outs];
    for (const o of outputs) this.define(o, `${nodeName} output`);
    const attribute_ = Object.entries(attrs).map(([k, v]) => attribute(k, v, nodeName));
    this.nodes.push(
      onnx.NodeProto.create({ name: nodeName, opType, domain: opts.domain ?? '', input: [...inputs], output: outputs, attribute: attribute_ }),
    );
    return outputs;
  }

  /** A single-output node; returns the output name. */
  op(opType: string, inputs: readonly string[], attrs: Record<string, OnnxAttr> = {}, opts: Omit<OnnxNodeOptions, 'outputs'> & { output?: string } = {}): string {
    const { output, ...rest } = opts;
    return this.node(opType, inputs, attrs, { ...rest, outputs: output !== undefined ? [output] : 1 })[0]!;
  }

  /** The `ModelProto`. Checks that every declared output is defined. */
  toModel(): onnx.ModelProto {
    for (const o of this.outputs) {
      if (!this.defined.has(o.name)) throw new InputError('graph output is never produced', { field: o.name });
    }
    if (this.outputs.length === 0) throw new InputError('graph has no outputs', { field: this.name });
    const opsetImport = [{ domain: '', version: this.opset }];
    for (const [domain, version] of Object.entries(this.options.domains ?? {})) opsetImport.push({ domain, version });
    return onnx.ModelProto.create({
      irVersion: this.irVersion,
      producerName: this.options.producerName ?? 'aptp',
      docString: this.options.docString ?? '',
      opsetImport,
      graph: onnx.GraphProto.create({
        name: this.name,
        input: this.inputs,
        output: this.outputs,
        initializer: this.initializers,
        node: this.nodes,
      }),
    });
  }

  /** The serialised model (what `OrtModel.load` and `.onnx` files take). */
  toBytes(): Uint8Array {
    return onnx.ModelProto.encode(this.toModel()).finish();
  }

  private define(name: string, what: string): void {
    if (name === '') throw new InputError(`empty tensor name for ${what}`, { field: this.name });
    if (this.defined.has(name)) throw new InputError(`duplicate tensor name (${what})`, { field: name });
    this.defined.add(name);
  }
}
