/**
 * onnxruntime-node, wrapped: one `OrtModel` per ONNX file (or in-memory bytes), named typed-array inputs in, named
 * typed-array outputs out, every ORT failure rethrown as an `AptpError` that names the model, and an idempotent
 * `dispose()` (STYLE.md §3 Memory/Errors; STACK.md §3: CPU execution provider, intra-op threads matter little past 2).
 */
import * as os from 'node:os';
import * as ort from 'onnxruntime-node';
import { AptpError, InputError, ShapeError } from '../errors';

/** Element types the wrapper passes through (ONNX `tensor(float)`, `tensor(double)`, `tensor(int64)`, ...). */
export type OrtDataType = 'float32' | 'float64' | 'int64' | 'int32' | 'uint8' | 'bool';
export type OrtData = Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array;

/** One named input or output: flat row-major data and its dims. */
export interface OrtTensorData {
  data: OrtData;
  dims: readonly number[];
  /** Needed only for `bool` (stored as Uint8Array); otherwise inferred from the array type. */
  type?: OrtDataType;
}

export interface OrtModelOptions {
  /** Threads inside one op (default: min(2, available cores)). */
  intraOpNumThreads?: number;
  /** Threads across independent ops (default 1: the CPU graphs here are sequential). */
  interOpNumThreads?: number;
  /** ORT graph optimisation level (default 'all'). */
  graphOptimizationLevel?: 'disabled' | 'basic' | 'extended' | 'all';
  /** Name used in error messages when the model comes from bytes (default `<bytes>`). */
  name?: string;
  /** ORT's own stderr logging: 0 verbose … 4 fatal (default 4: failures are rethrown as AptpErrors instead). */
  logSeverityLevel?: 0 | 1 | 2 | 3 | 4;
}

/** Default intra-op thread count: 2 on this 2-core machine, never more than the cores available. */
export function defaultOrtThreads(): number {
  const cores = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  return Math.max(1, Math.min(2, cores));
}

function typeOf(t: OrtTensorData): OrtDataType {
  if (t.type !== undefined) return t.type;
  if (t.data instanceof Float32Array) return 'float32';
  if (t.data instanceof Float64Array) return 'float64';
  if (t.data instanceof BigInt64Array) return 'int64';
  if (t.data instanceof Int32Array) return 'int32';
  if (t.data instanceof Uint8Array) return 'uint8';
  return 'float32';
}

/** Int64 input from plain numbers (each must be a safe integer). */
export function int64(values: ArrayLike<number | bigint>, dims: readonly number[] = [values.length]): OrtTensorData {
  const data = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (typeof v === 'number' && !Number.isSafeInteger(v)) {
      throw new InputError('int64 input value is not a safe integer', { field: `[${i}]`, found: v });
    }
    data[i] = BigInt(v);
  }
  return { data, dims };
}

/** A loaded ONNX model on the CPU execution provider. */
export class OrtModel {
  private session: ort.InferenceSession | null;

  private constructor(
    session: ort.InferenceSession,
    /** File path or `options.name`, used in every error. */
    readonly name: string,
  ) {
    this.session = session;
  }

  /** Loads an ONNX model from a file path or from its bytes (a `ModelProto` encoding). */
  static async load(source: string | Uint8Array, options: OrtModelOptions = {}): Promise<OrtModel> {
    const name = typeof source === 'string' ? source : options.name ?? '<bytes>';
    const intra = options.intraOpNumThreads ?? defaultOrtThreads();
    if (!Number.isInteger(intra) || intra < 1) {
      throw new InputError('bad ORT option', { file: name, field: 'intraOpNumThreads', expected: 'integer >= 1', found: intra });
    }
    const sessionOptions: ort.InferenceSession.SessionOptions = {
      executionProviders: ['cpu'],
      intraOpNumThreads: intra,
      interOpNumThreads: options.interOpNumThreads ?? 1,
      graphOptimizationLevel: options.graphOptimizationLevel ?? 'all',
      logSeverityLevel: options.logSeverityLevel ?? 4,
    };
    let session: ort.InferenceSession;
    try {
      session =
        typeof source === 'string'
          ? await ort.InferenceSession.create(source, sessionOptions)
          : await ort.InferenceSession.create(source, sessionOptions);
    } catch (err) {
      throw new InputError(`cannot load ONNX model: ${firstLine(err)}`, { code: 'E_ORT_LOAD', file: name, cause: err });
    }
    return new OrtModel(session, name);
  }

  get inputNames(): readonly string[] {
    return this.live().inputNames;
  }

  get outputNames(): readonly string[] {
    return this.live().outputNames;
  }

  /**
   * Runs the model. Every graph input must be fed (unknown names are errors that list the valid ones). Returns the
   * requested outputs (default: all) as plain typed arrays, copied out of ORT so they outlive `dispose()`.
   */
  async run(feeds: Record<string, OrtTensorData>, outputNames?: readonly string[]): Promise<Record<string, OrtTensorData>> {
    const session = this.live();
    const valid = session.inputNames;
    for (const key of Object.keys(feeds)) {
      if (!valid.includes(key)) {
        throw new InputError('unknown model input', { code: 'E_ORT_INPUT', file: this.name, field: key, expected: valid });
      }
    }
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const key of valid) {
      const t = feeds[key];
      if (t === undefined) {
        throw new InputError('missing model input', { code: 'E_ORT_INPUT', file: this.name, field: key, expected: valid });
      }
      const size = t.dims.reduce((a, b) => a * b, 1);
      if (size !== t.data.length) {
        throw new ShapeError('input data length does not match dims', {
          file: this.name,
          field: key,
          expected: `${size} elements for [${t.dims.join(',')}]`,
          found: t.data.length,
        });
      }
      ortFeeds[key] = new ort.Tensor(typeOf(t), t.data, t.dims);
    }
    const fetches = outputNames ?? session.outputNames;
    for (const o of fetches) {
      if (!session.outputNames.includes(o)) {
        throw new InputError('unknown model output', { code: 'E_ORT_OUTPUT', file: this.name, field: o, expected: session.outputNames });
      }
    }
    let results: ort.InferenceSession.OnnxValueMapType;
    try {
      results = await session.run(ortFeeds, [...fetches]);
    } catch (err) {
      throw new AptpError(`ONNX model run failed: ${firstLine(err)}`, { code: 'E_ORT_RUN', file: this.name, cause: err });
    }
    const out: Record<string, OrtTensorData> = {};
    for (const o of fetches) {
      const r = results[o] as ort.Tensor;
      const type = r.type as OrtDataType;
      const data = copyData(r.data as OrtData);
      out[o] = { data, dims: [...r.dims], type };
      r.dispose();
    }
    return out;
  }

  /** Releases the native session. Idempotent. */
  async dispose(): Promise<void> {
    const s = this.session;
    this.session = null;
    if (s !== null) await s.release();
  }

  get disposed(): boolean {
    return this.session === null;
  }

  private live(): ort.InferenceSession {
    if (this.session === null) throw new AptpError('ONNX model used after dispose()', { code: 'E_DISPOSED', file: this.name });
    return this.session;
  }
}

function copyData(d: OrtData): OrtData {
  // `slice()` keeps the typed-array class and detaches us from ORT-owned memory.
  return d.slice() as OrtData;
}

function firstLine(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.split('\n')[0]!.trim();
}

/** `OrtModel.load` as a function (the async factory the loaders use). */
export function loadOrtModel(source: string | Uint8Array, options: OrtModelOptions = {}): Promise<OrtModel> {
  return OrtModel.load(source, options);
}
