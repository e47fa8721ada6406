import * as tf from '@tensorflow/tfjs-core';
import { describeBackends, expectClose, expectNoTensorLeak, useBackend, type TestBackend } from '../../testing';
import { Rng } from '../../rng/rng';
import { conv2dNhwc } from './conv2d';
import { matMul2d, linearLastAxis } from './matmul';
import { multiHeadAttention } from './attention';
import { EagerOps } from './eagerOps';
import { gradCheck } from '../../testing';

/**
 * Oracles: convolution and matmul gradients are compared with their definitions evaluated in float64 JavaScript;
 * attention with tfjs autodiff of the naive batched formula on the cpu backend (BatchMatMul/Softmax gradients, checked
 * against loops here too); the registered elementwise/reduction gradients with finite differences. Every test runs on
 * cpu and on wasm, where plain autodiff of a convolution cannot run (no Conv2DBackpropFilter kernel).
 */

type Arr = { shape: number[]; data: Float32Array };

function rand(key: string, shape: number[], std = 1): Arr {
  const n = shape.reduce((a, b) => a * b, 1);
  return { shape, data: Rng.forKey(7, key).normal(n, 0, std) };
}

const t = (a: Arr) => tf.tensor(a.data, a.shape);
const arr = (x: tf.Tensor): Arr => ({ shape: [...x.shape], data: x.dataSync() as Float32Array });

/** Runs `fn` on the cpu backend and returns host arrays, then restores `back`. */
async function onCpu(back: TestBackend, fn: () => tf.Tensor[]): Promise<Arr[]> {
  await useBackend('cpu');
  const out = tf.tidy(() => fn().map((x) => tf.clone(x)));
  const res = out.map(arr);
  tf.dispose(out);
  await useBackend(back);
  return res;
}

/** Value and gradients (w.r.t. every input) of `sum(f(...) * r)` for a fixed random cotangent r. */
function valueAndGrads(f: (...xs: tf.Tensor[]) => tf.Tensor, inputs: Arr[], cot: Arr): tf.Tensor[] {
  return tf.tidy(() => {
    const xs = inputs.map(t);
    const y = f(...xs);
    const g = tf.grads((...zs: tf.Tensor[]) => tf.sum(tf.mul(f(...zs), t(cot))))(xs);
    return [y, ...g];
  });
}

function compareAll(name: string, ours: tf.Tensor[] | Arr[], ref: Arr[], rtol = 1e-4): void {
  ref.forEach((r, i) => {
    const o = ours[i]!;
    const od = o instanceof tf.Tensor ? o.dataSync() : o.data;
    const os = o instanceof tf.Tensor ? o.shape : o.shape;
    expect([...os]).toEqual(r.shape);
    expectClose(od, r.data, { name: `${name}[${i === 0 ? 'value' : `grad ${i - 1}`}]`, rtol });
  });
}

const refConv = (stride: number, pad: number) => (x: tf.Tensor, w: tf.Tensor) =>
  tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, stride, [[0, 0], [pad, pad], [pad, pad], [0, 0]]);

/** Convolution, dX and dW straight from the definition (float64 loops), NHWC / [kh, kw, I, O]. */
function jsConv(x: Arr, w: Arr, cot: Arr, stride: number, pad: number): Arr[] {
  const [N, H, W, I] = x.shape as [number, number, number, number];
  const [KH, KW, , O] = w.shape as [number, number, number, number];
  const OH = Math.floor((H + 2 * pad - KH) / stride) + 1;
  const OW = Math.floor((W + 2 * pad - KW) / stride) + 1;
  const y = new Float64Array(N * OH * OW * O);
  const dx = new Float64Array(x.data.length);
  const dw = new Float64Array(w.data.length);
  for (let n = 0; n < N; n++)
    for (let oh = 0; oh < OH; oh++)
      for (let ow = 0; ow < OW; ow++)
        for (let kh = 0; kh < KH; kh++)
          for (let kw = 0; kw < KW; kw++) {
            const h = oh * stride + kh - pad;
            const ww = ow * stride + kw - pad;
            if (h < 0 || h >= H || ww < 0 || ww >= W) continue;
            for (let i = 0; i < I; i++) {
              const xi = ((n * H + h) * W + ww) * I + i;
              for (let o = 0; o < O; o++) {
                const wi = ((kh * KW + kw) * I + i) * O + o;
                const yi = ((n * OH + oh) * OW + ow) * O + o;
                y[yi]! += x.data[xi]! * w.data[wi]!;
                dx[xi]! += cot.data[yi]! * w.data[wi]!;
                dw[wi]! += cot.data[yi]! * x.data[xi]!;
              }
            }
          }
  return [
    { shape: [N, OH, OW, O], data: Float32Array.from(y) },
    { shape: x.shape, data: Float32Array.from(dx) },
    { shape: w.shape, data: Float32Array.from(dw) },
  ];
}

/** A·B, dA = dy·Bᵀ, dB = Aᵀ·dy by loops. */
function jsMatMul(a: Arr, b: Arr, cot: Arr): Arr[] {
  const [M, K] = a.shape as [number, number];
  const N = b.shape[1]!;
  const y = new Float64Array(M * N);
  const da = new Float64Array(M * K);
  const db = new Float64Array(K * N);
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++)
      for (let k = 0; k < K; k++) {
        y[m * N + n]! += a.data[m * K + k]! * b.data[k * N + n]!;
        da[m * K + k]! += cot.data[m * N + n]! * b.data[k * N + n]!;
        db[k * N + n]! += a.data[m * K + k]! * cot.data[m * N + n]!;
      }
  return [
    { shape: [M, N], data: Float32Array.from(y) },
    { shape: [M, K], data: Float32Array.from(da) },
    { shape: [K, N], data: Float32Array.from(db) },
  ];
}

const convCases: { name: string; x: number[]; w: number[]; stride: number; pad: number }[] = [
  { name: '3x3 s1 p1', x: [2, 6, 5, 3], w: [3, 3, 3, 4], stride: 1, pad: 1 },
  { name: '3x3 s2 p1 even', x: [2, 8, 6, 3], w: [3, 3, 3, 5], stride: 2, pad: 1 },
  { name: '3x3 s2 p1 odd', x: [1, 7, 5, 2], w: [3, 3, 2, 3], stride: 2, pad: 1 },
  { name: '1x1 s1 p0', x: [2, 4, 4, 3], w: [1, 1, 3, 2], stride: 1, pad: 0 },
  { name: '3x3 s1 p0', x: [1, 6, 6, 2], w: [3, 3, 2, 2], stride: 1, pad: 0 },
  { name: '5x5 s1 p2', x: [1, 5, 6, 2], w: [5, 5, 2, 3], stride: 1, pad: 2 },
];

describeBackends('eager custom gradients vs tfjs autodiff (cpu oracle)', (backend) => {
  for (const c of convCases) {
    it(`conv2dNhwc ${c.name}: value, dX, dW`, async () => {
      const x = rand(`x${c.name}`, c.x);
      const w = rand(`w${c.name}`, c.w, 0.3);
      const y0 = tf.tidy(() => refConv(c.stride, c.pad)(t(x), t(w)));
      const cot = rand(`c${c.name}`, [...y0.shape]);
      y0.dispose();
      const ref = jsConv(x, w, cot, c.stride, c.pad);
      const ours = valueAndGrads((a, b) => conv2dNhwc(a as tf.Tensor4D, b as tf.Tensor4D, c.stride, c.pad), [x, w], cot);
      compareAll(`conv ${c.name}`, ours, ref);
      tf.dispose(ours);
      // frozen weight: only dX, same values
      const oursX = valueAndGrads((a) => conv2dNhwc(a as tf.Tensor4D, t(w) as tf.Tensor4D, c.stride, c.pad), [x], cot);
      compareAll(`conv ${c.name} (frozen w)`, oursX, ref.slice(0, 2));
      tf.dispose(oursX);
    });
  }

  it('matMul2d and linearLastAxis: value and both gradients, no transposed matmul', async () => {
    const a = rand('a', [5, 7]);
    const b = rand('b', [7, 3]);
    const cot = rand('cot', [5, 3]);
    const ref = jsMatMul(a, b, cot);
    const ours = valueAndGrads((p, q) => matMul2d(p as tf.Tensor2D, q as tf.Tensor2D), [a, b], cot);
    compareAll('matMul2d', ours, ref);
    tf.dispose(ours);
    // the registered BatchMatMul gradient (all transpose flag combinations) against the same loops
    for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]] as const) {
      const aa: Arr = ta ? { shape: [7, 5], data: tf.tidy(() => tf.transpose(t(a)).dataSync() as Float32Array) } : a;
      const bb: Arr = tb ? { shape: [3, 7], data: tf.tidy(() => tf.transpose(t(b)).dataSync() as Float32Array) } : b;
      const g = valueAndGrads((p, q) => tf.matMul(p, q, ta, tb), [aa, bb], cot);
      const back = tf.tidy(() => [g[0]!, ta ? tf.transpose(g[1]!) : g[1]!, tb ? tf.transpose(g[2]!) : g[2]!].map((z) => tf.clone(z)));
      compareAll(`BatchMatMul grad ta=${ta} tb=${tb}`, back, ref);
      tf.dispose([...g, ...back]);
    }

    const x = rand('x3', [2, 4, 7]);
    const bias = rand('bias', [3]);
    const cot3 = rand('cot3', [2, 4, 3]);
    const f = (p: tf.Tensor, q: tf.Tensor, r: tf.Tensor) => tf.add(tf.reshape(tf.matMul(tf.reshape(p, [8, 7]), q as tf.Tensor2D), [2, 4, 3]), r);
    const ref3 = await onCpu(backend, () => valueAndGrads(f, [x, b, bias], cot3)); // BatchMatMul/Add/Reshape gradients
    const ours3 = valueAndGrads((p, q, r) => linearLastAxis(p, q as tf.Tensor2D, r), [x, b, bias], cot3);
    compareAll('linearLastAxis', ours3, ref3);
    tf.dispose(ours3);
  });

  for (const [heads, path] of [[1, 'loop'], [3, 'loop'], [1, 'dense'], [3, 'dense'], [3, 'auto']] as const) {
    it(`multiHeadAttention (${heads} heads, S != T, ${path}): value and dq, dk, dv`, async () => {
      const [B, S, T, d] = [2, 5, 4, 2];
      const C = heads * d;
      const q = rand(`q${heads}`, [B, S, C]);
      const k = rand(`k${heads}`, [B, T, C]);
      const v = rand(`v${heads}`, [B, T, C]);
      const cot = rand(`co${heads}`, [B, S, C]);
      // naive reference: batched matmuls over [B, h, S, d]
      const naive = (qq: tf.Tensor, kk: tf.Tensor, vv: tf.Tensor) => {
        const split = (x: tf.Tensor, n: number) => tf.transpose(tf.reshape(x, [B, n, heads, d]), [0, 2, 1, 3]);
        const s = tf.mul(tf.matMul(split(qq, S), split(kk, T), false, true), 1 / Math.sqrt(d));
        const o = tf.matMul(tf.softmax(s), split(vv, T));
        return tf.reshape(tf.transpose(o, [0, 2, 1, 3]), [B, S, C]);
      };
      const ref = await onCpu(backend, () => valueAndGrads(naive, [q, k, v], cot));
      const ours = valueAndGrads((a, b, c) => multiHeadAttention(a as tf.Tensor3D, b as tf.Tensor3D, c as tf.Tensor3D, heads, path), [q, k, v], cot);
      compareAll(`attention h=${heads} ${path}`, ours, ref);
      tf.dispose(ours);
    });
  }

  it('EagerOps composite (conv, groupNorm, silu, gelu, layerNorm, upsample, channel ops): finite differences on cpu, same gradients on wasm', async () => {
    const o = new EagerOps({ weightGrads: 'always' });
    const x = rand('gx', [2, 4, 4, 4]);
    const w = rand('gw', [3, 3, 4, 6], 0.3);
    const gamma = rand('gg', [6], 0.2);
    const g = rand('gate', [2, 3]);
    const cot = rand('gcot', [2, 64, 8]);
    const f = (xx: tf.Tensor, ww: tf.Tensor, gg: tf.Tensor) => {
      let h = o.conv2d(xx, ww, null, { padding: 1 });
      h = o.scaleChannels(h, o.expandGroups(gg, 2));
      h = o.groupNorm(h, tf.add(t(gamma), 1), t(gamma), 3, 1e-5);
      h = o.upsampleNearest2x(o.silu(h));
      const tok = o.layerNorm(o.gelu(o.toTokens(h)), t(gamma), t(gamma), 1e-5);
      const both = o.concatChannels([tok, o.sliceChannels(tok, 1, 2)]);
      return o.blend(both, tf.mul(both, 2), tf.tensor1d([0.25, 0.75]));
    };
    const loss = (xx: tf.Tensor, ww: tf.Tensor, gg: tf.Tensor) => tf.sum(tf.mul(f(xx, ww, gg), t(cot))) as tf.Scalar;
    const ref = await onCpu(backend, () => {
      const ins = [t(x), t(w), t(g)];
      gradCheck(loss, ins, { eps: 1e-2, rtol: 3e-2, atol: 3e-2, probes: 12, name: 'composite' });
      return valueAndGrads(f, [x, w, g], cot);
    });
    const ours = valueAndGrads(f, [x, w, g], cot);
    compareAll('composite cpu vs backend', ours, ref);
    tf.dispose(ours);
  });

  it('registered gradients of reductions and data movement: finite differences', async () => {
    const ref = await onCpu(backend, () => {
      const x = t(rand('rx', [2, 3, 4]));
      const y = t(rand('ry', [3, 1]));
      const f = (a: tf.Tensor, b: tf.Tensor) =>
        tf.sum(
          tf.mul(
            tf.concat([tf.softmax(tf.div(a, tf.add(tf.abs(b), 1)), -1), tf.tile(tf.max(a, 2, true), [1, 1, 2]), tf.cumsum(tf.exp(tf.mul(a, 0.3)), 1)], 2),
            tf.slice(tf.reshape(tf.transpose(tf.pad(tf.slice(tf.stack([a, tf.sqrt(tf.add(tf.square(a), 1)), tf.tanh(a)], 0), [0, 0, 0, 1], [2, 2, 3, 3]), [[0, 0], [0, 0], [0, 0], [1, 2]]), [1, 2, 0, 3]), [2, 3, 12]), [0, 0, 0], [2, 3, 10]),
          ),
        ) as tf.Scalar;
      gradCheck(f, [x, y], { eps: 1e-2, rtol: 2e-2, atol: 2e-3, probes: 24, name: 'reductions' });
      return [...valueAndGrads((a, b) => tf.reshape(f(a, b), [1]), [arr(x), arr(y)], { shape: [1], data: Float32Array.from([1]) })];
    });
    expect(ref.length).toBe(3);
  });

  it('weightGrads: frozen plain weights get no gradient by default, trainable variables do', () => {
    const o = new EagerOps();
    const x = t(rand('vx', [1, 3, 3, 2]));
    const w = t(rand('vw', [3, 3, 2, 2]));
    expect(() => tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(o.conv2d(a, b, null, { padding: 1 })))([x, w])).toThrow();
    const v = tf.variable(w);
    const { grads } = tf.variableGrads(() => tf.sum(o.conv2d(x, v, null, { padding: 1 })) as tf.Scalar, [v]);
    expect(grads[v.name]!.shape).toEqual([3, 3, 2, 2]);
    tf.dispose([x, w, v, grads[v.name]!]);
  });

  it('forward + backward does not leak tensors', async () => {
    const o = new EagerOps();
    const x = t(rand('lx', [2, 4, 4, 3]));
    const w = tf.variable(t(rand('lw', [3, 3, 3, 3])));
    const q = t(rand('lq', [2, 16, 4]));
    await expectNoTensorLeak(() => {
      const { value, grads } = tf.variableGrads(() =>
        tf.tidy(() => {
          const h = o.conv2d(x, w, null, { stride: 2, padding: 1 });
          const a = o.attention(q, tf.pad(o.toTokens(h), [[0, 0], [0, 0], [0, 1]]), tf.slice(q, [0, 0, 0], [2, 4, 4]), 2);
          return tf.sum(a) as tf.Scalar;
        }),
      [w]);
      tf.dispose([value, ...Object.values(grads)]);
    });
    tf.dispose([x, w, q]);
  });
});

describeBackends('EagerOps forward against direct formulas', () => {
  const o = new EagerOps();
  it('timestepEmbedding matches the diffusers float32 formula (flip and no flip, freq_shift 1)', () => {
    const ts = [0, 1, 10, 700, 999];
    for (const [flip, shift] of [[true, 0], [false, 1]] as const) {
      const dim = 8;
      const half = dim / 2;
      const ref: number[] = [];
      for (const tt of ts) {
        const args = Array.from({ length: half }, (_, i) => Math.fround(tt * Math.exp((-Math.log(10000) * i) / (half - shift))));
        const sin = args.map(Math.sin);
        const cos = args.map(Math.cos);
        ref.push(...(flip ? [...cos, ...sin] : [...sin, ...cos]));
      }
      const e = o.timestepEmbedding(tf.tensor1d(ts), dim, flip, shift);
      expectClose(e, ref, { name: `t_proj flip=${flip}`, atol: 2e-4 });
      e.dispose();
    }
  });

  it('groupNorm equals the per-group formula; upsample is nearest ×2', () => {
    const xa = rand('gn', [2, 3, 2, 4]);
    const x = t(xa);
    const y = o.groupNorm(x, tf.ones([4]), tf.zeros([4]), 2, 1e-5);
    const out = y.dataSync();
    const [B, H, W, C] = xa.shape as [number, number, number, number];
    for (let b = 0; b < B; b++)
      for (let g = 0; g < 2; g++) {
        const idx: number[] = [];
        for (let p = 0; p < H * W; p++) for (let c = g * 2; c < g * 2 + 2; c++) idx.push(b * H * W * C + p * C + c);
        const vals = idx.map((i) => xa.data[i]!);
        const m = vals.reduce((s, v) => s + v, 0) / vals.length;
        const v = vals.reduce((s, u) => s + (u - m) ** 2, 0) / vals.length;
        idx.forEach((i) => expect(Math.abs(out[i]! - (xa.data[i]! - m) / Math.sqrt(v + 1e-5))).toBeLessThan(1e-5));
      }
    const up = o.upsampleNearest2x(x);
    const ud = up.dataSync();
    expect(up.shape).toEqual([2, 6, 4, 4]);
    for (let b = 0; b < B; b++)
      for (let i = 0; i < 2 * H; i++)
        for (let j = 0; j < 2 * W; j++)
          for (let c = 0; c < C; c++) expect(ud[((b * 2 * H + i) * 2 * W + j) * C + c]).toBe(xa.data[((b * H + (i >> 1)) * W + (j >> 1)) * C + c]);
    tf.dispose([x, y, up]);
  });

  it('layout round trip, tokens, channel ops, repeatBatch', () => {
    const nchw = t(rand('l', [2, 3, 4, 5]));
    const x = o.fromNCHW(nchw);
    expect(o.featureSize(x)).toEqual({ batch: 2, height: 4, width: 5, channels: 3 });
    const back = o.toNCHW(o.fromTokens(o.toTokens(x), 4, 5));
    expect(Array.from(back.dataSync())).toEqual(Array.from(nchw.dataSync()));
    const g = tf.tensor2d([[1, 2], [3, 4]]);
    expect(Array.from(o.expandGroups(g, 3).dataSync())).toEqual([1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]);
    expect(o.repeatBatch(g, 2).arraySync()).toEqual([[1, 2], [3, 4], [1, 2], [3, 4]]);
    const d = o.blend(tf.ones([2, 2]), tf.fill([2, 2], 3), tf.tensor1d([0, 1]));
    expect(d.arraySync()).toEqual([[1, 1], [3, 3]]);
    tf.dispose([nchw, x, back, g]);
  });
});

describeBackends('wasm kernel gap (why the custom gradients exist)', (backend) => {
  it('Conv2DBackpropFilter exists on cpu only; our conv weight gradient runs on both', () => {
    expect(tf.getKernel('Conv2DBackpropFilter', backend) !== undefined).toBe(backend === 'cpu');
    const x = tf.ones([1, 4, 4, 2]);
    const w = tf.ones([3, 3, 2, 2]);
    const [gx, gw] = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(conv2dNhwc(a as tf.Tensor4D, b as tf.Tensor4D, 1, 1)))([x, w]);
    // interior input pixels see all 9 taps of both output channels: 9·2 = 18
    expect(gx!.dataSync()[(1 * 4 + 1) * 2]).toBe(18);
    // the centre tap sees all 16 positions
    expect(gw!.dataSync()[((1 * 3 + 1) * 2 + 0) * 2 + 0]).toBe(16);
    tf.dispose([x, w, gx!, gw!]);
  });
});
