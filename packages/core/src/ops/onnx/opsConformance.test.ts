import * as tf from '@tensorflow/tfjs-core';
import { describeBackends, expectClose } from '../../testing';
import { Rng } from '../../rng/rng';
import { OrtModel } from '../../ort/runtime';
import { f16ToF32, f32ToF16 } from '../../io/safetensors';
import type { Ops } from '../ops';
import { EagerOps } from '../eager/eagerOps';
import type { OnnxDim } from './graph';
import { OnnxOps, type OnnxOpsOptions, type OnnxValue } from './onnxOps';

/**
 * Conformance of every `Ops` operation across implementations (STYLE.md §3 Tests): each case is written once against
 * `Ops<T>` and run on EagerOps (cpu and wasm) and on OnnxOps (a one-op ONNX graph run by ONNX Runtime). Public
 * layouts are the diffusers ones (maps NCHW, conv `[O, I, kh, kw]`, linear `[O, I]`); each implementation converts
 * them the way its weight loader does. The ORT result is compared with eager-cpu and eager-wasm at
 * `2e-5 · max(1, max|ref|)`, i.e. five times tighter than the model tolerance; shapes must agree exactly.
 */

type Kind = 'map' | 'tensor' | 'conv' | 'linear' | 'vector';
interface Arg {
  kind: Kind;
  shape: number[];
  data: Float32Array;
  /** Declared ONNX input shape (symbolic dims allowed); default the concrete shape. */
  onnxShape?: OnnxDim[];
}
interface Case {
  name: string;
  args: Arg[];
  /** The op under test, written once for every implementation. */
  run<T>(o: Ops<T>, xs: T[]): T;
  /** Output is a feature map (compared in NCHW). */
  outMap?: boolean;
  onnx?: OnnxOpsOptions;
  /** Extra concrete input shapes to run the same (dynamic) ONNX graph with. */
  alsoShapes?: number[][][];
}

const rtol = 2e-5;

function rand(key: string, shape: number[], std = 1, mean = 0): Float32Array {
  return Rng.forKey(11, key, ...shape).normal(shape.reduce((a, b) => a * b, 1), mean, std);
}
const map = (key: string, shape: number[], onnxShape?: OnnxDim[]): Arg => ({ kind: 'map', shape, data: rand(key, shape), onnxShape });
const ten = (key: string, shape: number[], onnxShape?: OnnxDim[], std = 1): Arg => ({ kind: 'tensor', shape, data: rand(key, shape, std), onnxShape });
const conv = (key: string, shape: number[]): Arg => ({ kind: 'conv', shape, data: rand(key, shape, 0.3) });
const lin = (key: string, shape: number[]): Arg => ({ kind: 'linear', shape, data: rand(key, shape, 0.3) });
const vec = (key: string, n: number, mean = 0): Arg => ({ kind: 'vector', shape: [n], data: rand(key, [n], 0.2, mean) });
const steps = (values: number[]): Arg => ({ kind: 'tensor', shape: [values.length], data: Float32Array.from(values) });
const gate = (key: string, shape: number[]): Arg => ({ kind: 'tensor', shape, data: Rng.forKey(3, key).uniform(shape.reduce((a, b) => a * b, 1)) });

const CASES: Case[] = [
  { name: 'fromNCHW → toNCHW', args: [map('x', [2, 3, 4, 5])], run: (o, [x]) => o.toNCHW(o.scale(o.fromNCHW(x!), 3)) },
  { name: 'toTokens', args: [map('x', [2, 3, 4, 5])], run: (o, [x]) => o.toTokens(o.fromNCHW(x!)) },
  {
    name: 'toTokens → fromTokens (dynamic batch/height/width)',
    args: [map('x', [2, 3, 4, 5], ['b', 3, 'h', 'w'])],
    alsoShapes: [[[1, 3, 6, 2]]],
    run: (o, [x]) => {
      const m = o.fromNCHW(x!);
      const { height, width } = o.featureSize(m);
      return o.fromTokens(o.scale(o.toTokens(m), 2), height, width);
    },
    outMap: true,
  },
  { name: 'fromTokens', args: [ten('t', [2, 12, 3])], run: (o, [t]) => o.fromTokens(t!, 3, 4), outMap: true },
  { name: 'conv2d 3×3 pad 1', args: [map('x', [2, 3, 6, 5]), conv('w', [4, 3, 3, 3]), vec('b', 4)], run: (o, [x, w, b]) => o.conv2d(o.fromNCHW(x!), w!, b!, { padding: 1 }), outMap: true },
  {
    name: 'conv2d 3×3 stride 2 pad 1 (dynamic sizes, odd and even)',
    args: [map('x', [2, 3, 7, 6], ['b', 3, 'h', 'w']), conv('w', [4, 3, 3, 3]), vec('b', 4)],
    alsoShapes: [[[1, 3, 4, 9]]],
    run: (o, [x, w, b]) => o.conv2d(o.fromNCHW(x!), w!, b!, { stride: 2, padding: 1 }),
    outMap: true,
  },
  { name: 'conv2d 1×1 no bias', args: [map('x', [2, 5, 3, 4]), conv('w', [6, 5, 1, 1])], run: (o, [x, w]) => o.conv2d(o.fromNCHW(x!), w!, null, { padding: 0 }), outMap: true },
  { name: 'linear on tokens', args: [ten('x', [2, 7, 5]), lin('w', [6, 5]), vec('b', 6)], run: (o, [x, w, b]) => o.linear(x!, w!, b!) },
  { name: 'linear on vectors, no bias', args: [ten('x', [3, 5]), lin('w', [4, 5])], run: (o, [x, w]) => o.linear(x!, w!, null) },
  {
    name: 'groupNorm (biased variance over group × H × W)',
    args: [{ ...map('x', [2, 8, 5, 3]), data: rand('x', [2, 8, 5, 3], 3, 2) }, vec('g', 8, 1), vec('b', 8)],
    run: (o, [x, g, b]) => o.groupNorm(o.fromNCHW(x!), g!, b!, 4, 1e-5),
    outMap: true,
  },
  {
    name: 'groupNorm (dynamic sizes, eps 1e-6)',
    args: [map('x', [1, 6, 4, 4], ['b', 6, 'h', 'w']), vec('g', 6, 1), vec('b', 6)],
    alsoShapes: [[[3, 6, 2, 5]]],
    run: (o, [x, g, b]) => o.groupNorm(o.fromNCHW(x!), g!, b!, 3, 1e-6),
    outMap: true,
  },
  { name: 'layerNorm', args: [ten('x', [2, 5, 6]), vec('g', 6, 1), vec('b', 6)], run: (o, [x, g, b]) => o.layerNorm(x!, g!, b!, 1e-5) },
  { name: 'attention: self, 3 heads', args: [ten('q', [2, 5, 12]), ten('k', [2, 5, 12]), ten('v', [2, 5, 12])], run: (o, [q, k, v]) => o.attention(q!, k!, v!, 3) },
  {
    name: 'attention: cross, 2 heads (dynamic)',
    args: [ten('q', [2, 6, 8], ['b', 's', 8]), ten('k', [2, 3, 8], ['b', 't', 8]), ten('v', [2, 3, 8], ['b', 't', 8])],
    alsoShapes: [[[1, 4, 8], [1, 7, 8], [1, 7, 8]]],
    run: (o, [q, k, v]) => o.attention(q!, k!, v!, 2),
  },
  {
    name: 'attention: standard ONNX decomposition, 1 head',
    args: [ten('q', [2, 4, 6]), ten('k', [2, 3, 6]), ten('v', [2, 3, 6])],
    run: (o, [q, k, v]) => o.attention(q!, k!, v!, 1),
    onnx: { attention: 'standard' },
  },
  {
    name: 'attention: standard ONNX decomposition, 4 heads',
    args: [ten('q', [2, 5, 8]), ten('k', [2, 3, 8]), ten('v', [2, 3, 8])],
    run: (o, [q, k, v]) => o.attention(q!, k!, v!, 4),
    onnx: { attention: 'standard' },
  },
  {
    name: 'upsampleNearest2x (dynamic)',
    args: [map('x', [2, 3, 3, 4], ['b', 3, 'h', 'w'])],
    alsoShapes: [[[1, 3, 5, 2]]],
    run: (o, [x]) => o.upsampleNearest2x(o.fromNCHW(x!)),
    outMap: true,
  },
  { name: 'timestepEmbedding flip, shift 0', args: [steps([0, 1, 10, 500, 999])], run: (o, [t]) => o.timestepEmbedding(t!, 16, true, 0) },
  { name: 'timestepEmbedding no flip, shift 1, odd dim', args: [steps([3, 700, 981])], run: (o, [t]) => o.timestepEmbedding(t!, 9, false, 1) },
  { name: 'add', args: [ten('a', [2, 3, 4]), ten('b', [2, 3, 4])], run: (o, [a, b]) => o.add(a!, b!) },
  { name: 'mul', args: [ten('a', [2, 3, 4]), ten('b', [2, 3, 4])], run: (o, [a, b]) => o.mul(a!, b!) },
  { name: 'scale', args: [ten('a', [2, 3, 4])], run: (o, [a]) => o.scale(a!, -0.37) },
  { name: 'silu', args: [ten('a', [2, 3, 4], undefined, 4)], run: (o, [a]) => o.silu(a!) },
  { name: 'gelu (opset 21: Gelu-20)', args: [ten('a', [2, 3, 4], undefined, 3)], run: (o, [a]) => o.gelu(a!) },
  { name: 'gelu (opset 17: erf formula)', args: [ten('a', [2, 3, 4], undefined, 3)], run: (o, [a]) => o.gelu(a!), onnx: { opset: 17 } },
  { name: 'concatChannels (maps)', args: [map('a', [2, 3, 4, 5]), map('b', [2, 2, 4, 5])], run: (o, [a, b]) => o.concatChannels([o.fromNCHW(a!), o.fromNCHW(b!)]), outMap: true },
  { name: 'concatChannels (tokens)', args: [ten('a', [2, 3, 4]), ten('b', [2, 3, 2]), ten('c', [2, 3, 1])], run: (o, [a, b, c]) => o.concatChannels([a!, b!, c!]) },
  { name: 'sliceChannels (maps)', args: [map('a', [2, 6, 3, 4])], run: (o, [a]) => o.sliceChannels(o.fromNCHW(a!), 2, 3), outMap: true },
  { name: 'sliceChannels (vectors)', args: [ten('a', [3, 7])], run: (o, [a]) => o.sliceChannels(a!, 4, 3) },
  { name: 'addChannels (maps)', args: [map('x', [2, 3, 4, 5]), ten('v', [2, 3])], run: (o, [x, v]) => o.addChannels(o.fromNCHW(x!), v!), outMap: true },
  { name: 'addChannels (tokens)', args: [ten('x', [2, 5, 3]), ten('v', [2, 3])], run: (o, [x, v]) => o.addChannels(x!, v!) },
  { name: 'scaleChannels (maps)', args: [map('x', [2, 3, 4, 5]), gate('g', [2, 3])], run: (o, [x, g]) => o.scaleChannels(o.fromNCHW(x!), g!), outMap: true },
  { name: 'scaleChannels (tokens)', args: [ten('x', [2, 5, 6]), gate('g', [2, 6])], run: (o, [x, g]) => o.scaleChannels(x!, g!) },
  { name: 'expandGroups', args: [gate('g', [2, 3])], run: (o, [g]) => o.expandGroups(g!, 4) },
  { name: 'expandGroups ×1', args: [gate('g', [2, 3])], run: (o, [g]) => o.scale(o.expandGroups(g!, 1), 1) },
  { name: 'blend (maps)', args: [map('x', [2, 3, 4, 5]), map('f', [2, 3, 4, 5]), gate('d', [2])], run: (o, [x, f, d]) => o.blend(o.fromNCHW(x!), o.fromNCHW(f!), d!), outMap: true },
  { name: 'blend (tokens)', args: [ten('x', [2, 4, 3]), ten('f', [2, 4, 3]), gate('d', [2])], run: (o, [x, f, d]) => o.blend(x!, f!, d!) },
  { name: 'meanTokens', args: [ten('x', [2, 5, 3])], run: (o, [x]) => o.meanTokens(x!) },
  { name: 'meanTokens (opset 17: axes attribute)', args: [ten('x', [3, 4, 2])], run: (o, [x]) => o.meanTokens(x!), onnx: { opset: 17 } },
  { name: 'asToken', args: [ten('v', [2, 5])], run: (o, [v]) => o.asToken(v!) },
  { name: 'concatTokens', args: [ten('a', [2, 1, 3]), ten('b', [2, 4, 3])], run: (o, [a, b]) => o.concatTokens([a!, b!]) },
  {
    name: 'concatTokens → meanTokens (dynamic token count)',
    args: [ten('a', [2, 1, 3]), ten('b', [2, 4, 3], [2, 's', 3])],
    alsoShapes: [[[2, 1, 3], [2, 7, 3]]],
    run: (o, [a, b]) => o.meanTokens(o.concatTokens([a!, b!])),
  },
  { name: 'asToken → concatTokens → meanTokens', args: [ten('v', [2, 3]), ten('x', [2, 4, 3])], run: (o, [v, x]) => o.meanTokens(o.concatTokens([o.asToken(v!), x!])) },
  { name: 'repeatBatch', args: [ten('x', [2, 3])], run: (o, [x]) => o.repeatBatch(x!, 3) },
  {
    name: 'repeatBatch of gates for CFG (dynamic token count)',
    args: [ten('x', [2, 4, 6], [2, 's', 6]), gate('g', [1, 3])],
    alsoShapes: [[[2, 9, 6], [1, 3]]],
    run: (o, [x, g]) => o.scaleChannels(x!, o.expandGroups(o.repeatBatch(g!, o.batchSize(x!)), 2)),
  },
  { name: 'scope', args: [ten('a', [2, 3]), ten('b', [2, 3])], run: (o, [a, b]) => o.scope(() => o.mul(o.add(a!, b!), b!)) },
];

/** Host conversion of diffusers weights into EagerOps' load-time layout (as `weights.ts` does). */
function eagerArg(a: Arg): tf.Tensor {
  switch (a.kind) {
    case 'map': // NCHW: the case applies fromNCHW itself
    case 'tensor':
    case 'vector':
      return tf.tensor(a.data, a.shape);
    case 'linear':
      return tf.transpose(tf.tensor2d(a.data, a.shape as [number, number]));
    case 'conv':
      return tf.transpose(tf.tensor4d(a.data, a.shape as [number, number, number, number]), [2, 3, 1, 0]);
  }
}

function runEager(c: Case, shapes?: number[][]): { shape: number[]; data: Float32Array } {
  const o = new EagerOps();
  return tf.tidy(() => {
    const xs = c.args.map((a, i) => {
      const s = shapes?.[i];
      return eagerArg(s === undefined ? a : { ...a, shape: s, data: rand(`${c.name}:${i}`, s) });
    });
    const y = c.run(o, xs);
    const out = c.outMap ? o.toNCHW(y) : y;
    return { shape: [...out.shape], data: out.dataSync() as Float32Array };
  });
}

/** Builds the one-op graph of a case (dynamic where the case says so). */
function buildOnnx(c: Case): Uint8Array {
  const o = new OnnxOps(c.onnx);
  const xs: OnnxValue[] = c.args.map((a, i) => {
    switch (a.kind) {
      case 'map':
      case 'tensor':
        return o.input(`in${i}`, 'float32', a.onnxShape ?? a.shape);
      case 'conv':
        return o.convWeight(a, `w${i}`);
      case 'linear':
        return o.linearWeight(a, `w${i}`);
      case 'vector':
        return o.vectorWeight(a, `w${i}`);
    }
  });
  const y = c.run(o, xs);
  o.output(c.outMap ? o.toNCHW(y) : y, 'y');
  return o.toBytes();
}

async function runOrt(model: OrtModel, c: Case, shapes?: number[][]): Promise<{ shape: number[]; data: Float32Array }> {
  const feeds: Record<string, { data: Float32Array; dims: number[] }> = {};
  c.args.forEach((a, i) => {
    if (a.kind !== 'map' && a.kind !== 'tensor') return;
    const s = shapes?.[i];
    feeds[`in${i}`] = s === undefined ? { data: a.data, dims: a.shape } : { data: rand(`${c.name}:${i}`, s), dims: s };
  });
  const { y } = await model.run(feeds);
  return { shape: [...y!.dims], data: y!.data as Float32Array };
}

describe('OnnxOps builds valid graphs', () => {
  it('reports symbolic sizes as stable negative ids and static ones as numbers', () => {
    const o = new OnnxOps();
    const x = o.input('x', 'float32', ['batch', 4, 'height', 8]);
    const t = o.input('t', 'float32', ['batch']);
    const s = o.featureSize(x);
    expect(s.channels).toBe(4);
    expect(s.width).toBe(8);
    expect(s.batch).toBeLessThan(0);
    expect(s.height).toBeLessThan(0);
    expect(s.height).not.toBe(s.batch);
    expect(o.batchSize(t)).toBe(s.batch);
    const down = o.conv2d(x, o.convWeight({ shape: [4, 4, 3, 3], data: new Float32Array(144) }), null, { stride: 2, padding: 1 });
    expect(o.featureSize(down).height).not.toBe(s.height);
    expect(o.featureSize(down).width).toBe(4);
    expect(o.featureSize(o.conv2d(x, o.convWeight({ shape: [2, 4, 3, 3], data: new Float32Array(72) }), null, { padding: 1 })).height).toBe(s.height);
  });

  it('rejects misuse with AptpErrors naming the value', () => {
    const o = new OnnxOps();
    const x = o.input('x', 'float32', [1, 6, 2, 2]);
    expect(() => o.groupNorm(x, x, x, 4, 1e-5)).toThrow(/multiple of 4/);
    expect(() => o.toTokens(o.input('t', 'float32', [1, 2, 3]))).toThrow(/rank 4/);
    expect(() => o.sliceChannels(x, 4, 3)).toThrow(/out of range/);
    expect(() => o.fromTokens(o.input('u', 'float32', [1, 4, 6]), -7, 2)).toThrow(/unknown symbolic size/);
    expect(() => new OnnxOps({ opset: 13 })).toThrow(/opset/);
  });
});

describe('Ops conformance: EagerOps (cpu, wasm) vs OnnxOps on ONNX Runtime', () => {
  const ort = new Map<string, Array<{ shape: number[]; data: Float32Array }>>();

  beforeAll(async () => {
    for (const c of CASES) {
      const model = await OrtModel.load(buildOnnx(c), { name: `${c.name}.onnx`, intraOpNumThreads: 1 });
      try {
        const results = [await runOrt(model, c)];
        for (const s of c.alsoShapes ?? []) results.push(await runOrt(model, c, s));
        ort.set(c.name, results);
      } finally {
        await model.dispose();
      }
    }
  });

  describeBackends('every op', () => {
    for (const c of CASES) {
      it(c.name, () => {
        const results = ort.get(c.name)!;
        [undefined, ...(c.alsoShapes ?? [])].forEach((shapes, k) => {
          const eager = runEager(c, shapes);
          const onnx = results[k]!;
          expect(onnx.shape).toEqual(eager.shape);
          expectClose(onnx.data, eager.data, { name: `${c.name} (shapes ${k})`, rtol });
        });
      });
    }
  });

  it('covers every method of the Ops interface', () => {
    const src = CASES.map((c) => c.run.toString()).join('\n');
    const methods = Object.getOwnPropertyNames(EagerOps.prototype).filter((m) => !['constructor', 'gradFor', 'perSample'].includes(m));
    expect(methods.length).toBeGreaterThanOrEqual(26);
    for (const m of methods) expect({ m, used: src.includes(`.${m}(`) }).toEqual({ m, used: true });
  });
});

describe('OnnxOps float16 weights', () => {
  it('stores half-precision initializers and computes in float32 (= eager with rounded weights)', async () => {
    const x = rand('x16', [1, 3, 4, 4]);
    const w = rand('w16', [2, 3, 3, 3], 0.3);
    const rounded = Float32Array.from(w, (v) => f16ToF32(f32ToF16(v)));
    const o16 = new OnnxOps({ weightDtype: 'float16' });
    o16.output(o16.conv2d(o16.input('x', 'float32', [1, 3, 4, 4]), o16.convWeight({ shape: [2, 3, 3, 3], data: w }), null, { padding: 1 }), 'y');
    const o32 = new OnnxOps();
    o32.output(o32.conv2d(o32.input('x', 'float32', [1, 3, 4, 4]), o32.convWeight({ shape: [2, 3, 3, 3], data: rounded }), null, { padding: 1 }), 'y');
    const b16 = o16.toBytes();
    const b32 = o32.toBytes();
    expect(b16.length).toBeLessThan(b32.length);
    const m16 = await OrtModel.load(b16);
    const m32 = await OrtModel.load(b32);
    const y16 = (await m16.run({ x: { data: x, dims: [1, 3, 4, 4] } })).y!.data as Float32Array;
    const y32 = (await m32.run({ x: { data: x, dims: [1, 3, 4, 4] } })).y!.data as Float32Array;
    expectClose(y16, y32, { name: 'fp16-weight conv', atol: 1e-6 });
    // and the rounding is real: full-precision weights give a different result
    const of = new OnnxOps();
    of.output(of.conv2d(of.input('x', 'float32', [1, 3, 4, 4]), of.convWeight({ shape: [2, 3, 3, 3], data: w }), null, { padding: 1 }), 'y');
    const mf = await OrtModel.load(of.toBytes());
    const yf = (await mf.run({ x: { data: x, dims: [1, 3, 4, 4] } })).y!.data as Float32Array;
    expect(Math.max(...yf.map((v, i) => Math.abs(v - y16[i]!)))).toBeGreaterThan(1e-5);
    await Promise.all([m16.dispose(), m32.dispose(), mf.dispose()]);
  });
});
