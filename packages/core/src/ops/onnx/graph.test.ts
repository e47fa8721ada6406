import { expectClose } from '../../testing/expectClose';
import { Rng } from '../../rng/rng';
import { OrtModel, int64 } from '../../ort/runtime';
import { OnnxGraph, onnxTensor } from './graph';
import { onnx } from 'onnx-proto';

function randn(rng: Rng, n: number): Float32Array {
  const a = rng.normal(n);
  if (!a.every(Number.isFinite)) throw new Error('randn');
  return a;
}

/** y = a·b for row-major [m,k]·[k,n], in float64. */
function matmulRef(a: ArrayLike<number>, b: ArrayLike<number>, m: number, k: number, n: number): Float64Array {
  const y = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let p = 0; p < k; p++) {
      const aip = a[i * k + p]!;
      for (let j = 0; j < n; j++) y[i * n + j] += aip * b[p * n + j]!;
    }
  return y;
}

describe('OnnxGraph + OrtModel', () => {
  const rng = Rng.forKey(7, 'graph.test');

  test('MatMul with a symbolic batch dim and a float32 initializer', async () => {
    const g = new OnnxGraph('matmul');
    const w = randn(rng, 5 * 3);
    g.input('x', 'float32', ['batch', 5]);
    const wName = g.initializer('w', { data: w, dims: [5, 3] });
    g.output(g.op('MatMul', ['x', wName], {}, { output: 'y' }), 'float32', ['batch', 3]);
    const model = await OrtModel.load(g.toBytes(), { name: 'matmul.onnx' });
    try {
      expect(model.inputNames).toEqual(['x']);
      expect(model.outputNames).toEqual(['y']);
      for (const batch of [1, 4]) {
        const x = randn(rng, batch * 5);
        const { y } = await model.run({ x: { data: x, dims: [batch, 5] } });
        expect(y!.dims).toEqual([batch, 3]);
        expect(y!.data).toBeInstanceOf(Float32Array);
        expectClose(y!.data as Float32Array, matmulRef(x, w, batch, 5, 3), { name: 'y', rtol: 1e-6 });
      }
    } finally {
      await model.dispose();
    }
  });

  test('float64 MatMul is exact to double rounding', async () => {
    const g = new OnnxGraph('matmul64');
    g.input('a', 'float64', ['m', 'k']);
    g.input('b', 'float64', ['k', 'n']);
    g.output(g.op('MatMul', ['a', 'b'], {}, { output: 'c' }), 'float64');
    const model = await OrtModel.load(g.toBytes());
    const a = Float64Array.from(randn(rng, 6 * 7), (v) => v / 3);
    const b = Float64Array.from(randn(rng, 7 * 2), (v) => v / 7);
    const { c } = await model.run({ a: { data: a, dims: [6, 7] }, b: { data: b, dims: [7, 2] } });
    expect(c!.data).toBeInstanceOf(Float64Array);
    expectClose(c!.data as Float64Array, matmulRef(a, b, 6, 7, 2), { name: 'c', atol: 1e-14 });
    await model.dispose();
    await model.dispose(); // idempotent
    expect(model.disposed).toBe(true);
    await expect(model.run({})).rejects.toThrow(/after dispose/);
  });

  test('Gemm with float attributes and transB', async () => {
    const g = new OnnxGraph('gemm');
    const w = randn(rng, 4 * 3); // [out=4, in=3] like a Linear weight
    const b = randn(rng, 4);
    g.input('x', 'float32', [2, 3]);
    const y = g.op('Gemm', ['x', g.initializer('w', { data: w, dims: [4, 3] }), g.constant({ data: b, dims: [4] })], {
      alpha: { float: 0.5 },
      beta: { float: 2 },
      transB: 1,
    });
    g.output(y, 'float32', [2, 4]);
    const model = await OrtModel.load(g.toBytes());
    const x = randn(rng, 6);
    const out = (await model.run({ x: { data: x, dims: [2, 3] } }))[y]!;
    const ref = new Float64Array(8);
    for (let i = 0; i < 2; i++)
      for (let o = 0; o < 4; o++) {
        let s = 0;
        for (let c = 0; c < 3; c++) s += x[i * 3 + c]! * w[o * 3 + c]!;
        ref[i * 4 + o] = 0.5 * s + 2 * b[o]!;
      }
    expectClose(out.data as Float32Array, ref, { name: 'gemm', rtol: 1e-6 });
    await model.dispose();
  });

  test('tiny graph: int64 Reshape shape, Softmax axis, multi-output Split, int64 graph input', async () => {
    const g = new OnnxGraph('tiny', { opset: 17 });
    g.input('x', 'float32', ['batch', 2, 3]);
    g.input('idx', 'int64', [2]);
    const flat = g.op('Reshape', ['x', g.constant({ data: [-1, 6], dims: [2], dtype: 'int64' })]);
    const sm = g.op('Softmax', [flat], { axis: 1 });
    const [lo, hi] = g.node('Split', [sm, g.constant({ data: new BigInt64Array([2n, 4n]), dims: [2] })], { axis: 1 }, { outputs: ['lo', 'hi'] });
    const picked = g.op('Gather', [hi!, 'idx'], { axis: 1 }, { output: 'picked' });
    g.output(lo!, 'float32', ['batch', 2]);
    g.output(picked, 'float32', ['batch', 2]);
    const model = await OrtModel.load(g.toBytes(), { intraOpNumThreads: 1 });
    const x = randn(rng, 3 * 6);
    const res = await model.run({ x: { data: x, dims: [3, 2, 3] }, idx: int64([3, 0]) });
    const expLo: number[] = [];
    const expPicked: number[] = [];
    for (let r = 0; r < 3; r++) {
      const row = Array.from(x.subarray(r * 6, r * 6 + 6));
      const m = Math.max(...row);
      const e = row.map((v) => Math.exp(v - m));
      const s = e.reduce((a, c) => a + c, 0);
      const p = e.map((v) => v / s);
      expLo.push(p[0]!, p[1]!);
      expPicked.push(p[2 + 3]!, p[2 + 0]!);
    }
    expect(res.lo!.dims).toEqual([3, 2]);
    expectClose(res.lo!.data as Float32Array, expLo, { name: 'lo', rtol: 1e-6 });
    expectClose(res.picked!.data as Float32Array, expPicked, { name: 'picked', rtol: 1e-6 });
    // Only the requested output is fetched.
    expect(Object.keys(await model.run({ x: { data: x, dims: [3, 2, 3] }, idx: int64([0, 1]) }, ['lo']))).toEqual(['lo']);
    await model.dispose();
  });

  test('float16 initializer, raw bytes round-trip and symbolic dims in the proto', () => {
    const t = onnxTensor('h', { data: [1, -2.5, 65504], dims: [3], dtype: 'float16' });
    expect(t.dataType).toBe(onnx.TensorProto.DataType.FLOAT16);
    expect(Array.from(new Uint16Array(t.rawData.slice().buffer))).toEqual([0x3c00, 0xc100, 0x7bff]);
    const sub = new Float32Array([9, 1, 2, 3]).subarray(1); // a view with a byte offset
    expect(Array.from(new Float32Array(onnxTensor('s', { data: sub, dims: [3] }).rawData.slice().buffer))).toEqual([1, 2, 3]);
    const g = new OnnxGraph('ids', { opset: 18, irVersion: 9 });
    g.input('x', 'float32', ['n', 4]);
    g.output(g.op('Identity', ['x']), 'float32', ['n', 4]);
    const m = onnx.ModelProto.decode(g.toBytes());
    expect(Number(m.irVersion)).toEqual(9);
    expect(Number(m.opsetImport[0]!.version)).toEqual(18);
    const dims = m.graph?.input?.[0]?.type?.tensorType?.shape?.dim ?? [];
    expect(dims.map((d) => d.dimParam || Number(d.dimValue))).toEqual(['n', 4]);
  });

  test('builder errors name the tensor', () => {
    const g = new OnnxGraph('bad');
    g.input('x', 'float32', [2]);
    expect(() => g.input('x', 'float32', [2])).toThrow(/x: duplicate tensor name/);
    expect(() => g.op('Relu', ['nope'])).toThrow(/input is not defined yet.*nope/);
    expect(() => g.op('LeakyRelu', ['x'], { alpha: 0.1 })).toThrow(/\{ float: x \}/);
    expect(() => g.initializer('w', { data: new Float32Array(3), dims: [2, 2] })).toThrow(/w: tensor data length.*expected 4 elements for \[2,2\], found 3/);
    g.output('ghost', 'float32');
    expect(() => g.toBytes()).toThrow(/ghost: graph output is never produced/);
  });

  test('ORT errors become AptpErrors naming the model', async () => {
    await expect(OrtModel.load(new Uint8Array([1, 2, 3, 4]), { name: 'garbage.onnx' })).rejects.toThrow(/^garbage\.onnx: cannot load ONNX model/);
    await expect(OrtModel.load('/nonexistent/model.onnx')).rejects.toMatchObject({ name: 'InputError', file: '/nonexistent/model.onnx' });
    const g = new OnnxGraph('mm');
    g.input('a', 'float32', ['m', 'k']);
    g.input('b', 'float32', ['k', 'n']);
    g.output(g.op('MatMul', ['a', 'b']), 'float32');
    const model = await OrtModel.load(g.toBytes(), { name: 'mm.onnx' });
    // Inner dims disagree: ORT itself fails at run time.
    await expect(
      model.run({ a: { data: new Float32Array(6), dims: [2, 3] }, b: { data: new Float32Array(8), dims: [4, 2] } }),
    ).rejects.toMatchObject({ name: 'AptpError', code: 'E_ORT_RUN', file: 'mm.onnx' });
    await expect(model.run({ a: { data: new Float32Array(6), dims: [2, 3] } })).rejects.toThrow(/mm\.onnx: b: missing model input/);
    await expect(model.run({ a: { data: new Float32Array(6), dims: [2, 2] }, b: { data: new Float32Array(6), dims: [3, 2] } })).rejects.toThrow(
      /mm\.onnx: a: input data length/,
    );
    await expect(model.run({ c: { data: new Float32Array(1), dims: [1] } })).rejects.toThrow(/mm\.onnx: c: unknown model input: expected \["a","b"\]/);
    await model.dispose();
  });
});
