import * as tf from '@tensorflow/tfjs-core';
import { Rng } from '@aptp/core';
import { describeBackends, expectClose, expectNoTensorLeak, gradCheck } from '@aptp/core/testing';
import { gumbelOptions } from './config';
import { gumbelSigmoid, gumbelSigmoidDetailed, sampleGumbelNoise } from './gumbel';
import { widthDepthNormalize } from './normalize';
import { PromptRouter } from './router';
import { oneHotRows } from './routing';
import { tinyLayout } from './testLayout';

const OPTS = { temperature: 0.4, base: 3, nonZeroWidth: true, depthOrder: [-1, -2, 0, 1, -3, -4, 2, 3, -5, -6, 4, 5, -7, 6] };

describeBackends('router gradients and properties', (backend) => {
  const layout = tinyLayout();
  const L = layout.vectorLength;
  const W = layout.widthEntries;

  it('non-zero rule keeps ≥ 1 element of every width gate; depth gates follow depth_order priority for equal noise', () => {
    tf.tidy(() => {
      const logits = tf.fill([3, L], -30) as tf.Tensor2D; // every gate would be closed
      const r = gumbelSigmoidDetailed(logits, tf.zeros([3, L]) as tf.Tensor2D, layout, OPTS);
      const g = r.gates.arraySync();
      for (const row of g) {
        for (const gate of layout.widthGates) {
          expect(row.slice(gate.offset, gate.end).filter((v) => v >= 0.5).length).toBe(1);
          expect(row[gate.offset]!).toBeGreaterThanOrEqual(0.5);
        }
      }
      expect(tf.sum(r.nonZeroRuleApplied).dataSync()[0]).toBe(3 * layout.widthGates.length);
      // With uniform depth logits and zero noise, t_j decreases with j, so gate order[j] is kept with priority j.
      const order = OPTS.depthOrder.map((i) => ((i % 14) + 14) % 14);
      const t = r.depthBeforeScatter.arraySync()[0]!;
      for (let j = 1; j < 14; j++) expect(t[j]!).toBeLessThanOrEqual(t[j - 1]!);
      order.forEach((k, j) => expect(g[0]![W + k]).toBeCloseTo(t[j]!, 6));
    });
  });

  it('width_depth_normalize has the reference gradient (straight-through + product rule)', () => {
    const rng = Rng.forKey(8, 'wdn');
    const s = rng.uniform(2 * L);
    const c = rng.normal(2 * L);
    const sT = tf.tensor2d(s, [2, L]);
    const cT = tf.tensor2d(c, [2, L]);
    const g = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(widthDepthNormalize(x as tf.Tensor2D, layout), cT)))(sT);
    // Analytic: template √(1/w); hard entries pass c·√(1/w) straight through; a depth-gated sub-block's width entry i
    // gets c_i·√(1/w_i)·s_d, its depth entry d gets c_d + Σ_i c_i·√(1/w_i)·s_i.
    const expected = new Float32Array(2 * L);
    for (let b = 0; b < 2; b++) {
      for (const gate of layout.widthGates) for (let i = gate.offset; i < gate.end; i++) expected[b * L + i] = c[b * L + i]! * Math.sqrt(1 / gate.width);
      expected.set(c.subarray(b * L + W, (b + 1) * L), b * L + W);
      for (const d of layout.depthGates) {
        const [start, end] = layout.subBlocks[d.subBlockIndex]!.widthOffsets;
        const sd = s[b * L + d.vectorIndex]!;
        for (let i = start; i < end; i++) {
          const w = layout.widthGates.find((gg) => gg.offset <= i && i < gg.end)!.width;
          expected[b * L + d.vectorIndex] += c[b * L + i]! * Math.sqrt(1 / w) * s[b * L + i]!;
          expected[b * L + i] = c[b * L + i]! * Math.sqrt(1 / w) * sd;
        }
      }
    }
    expectClose(g, expected, { name: `dN/ds [${backend}]`, rtol: 1e-5 });
    tf.dispose([sT, cT, g]);
  });

  it('two-phase gradient semantics (APTP.md §2.6): pretrain → predictor only; main → codes via gates, predictor via N(s) only', () => {
    const router = PromptRouter.init(layout, { inputDim: 12, numCodes: 3 }, 5);
    const rng = Rng.forKey(9, 'phase');
    const B = 4;
    const x = tf.tensor2d(rng.normal(B * 12), [B, 12]);
    const noise = {
      codebook: tf.tensor2d(sampleGumbelNoise(rng, 3, L), [3, L]),
      assignment: tf.tensor2d(sampleGumbelNoise(rng, B, L), [B, L]),
      step: tf.tensor2d(sampleGumbelNoise(rng, B, L), [B, L]),
    };
    const c1 = tf.tensor2d(rng.normal(B * L), [B, L]); // stands in for the UNet/resource losses (through the gates)
    const c2 = tf.tensor2d(rng.normal(B * L), [B, L]); // stands in for the contrastive loss (through N(s))
    const vars = router.variables();
    const grads = (f: () => tf.Scalar) => {
      const { grads: g, value } = tf.variableGrads(f, vars);
      value.dispose();
      return vars.map((v) => g[v.name] ?? tf.zerosLike(v));
    };
    const loss = (phase: 'pretrain' | 'main', useGates: boolean, useContrastive: boolean) => () =>
      tf.tidy(() => {
        const o = router.trainForward(x, noise, phase);
        let l = tf.scalar(0);
        if (useGates) l = tf.add(l, tf.sum(tf.mul(o.gates, c1)));
        if (useContrastive) l = tf.add(l, tf.sum(tf.mul(o.archVectorNormalized, c2)));
        return l as tf.Scalar;
      });
    const [pW, pB, pC] = grads(loss('pretrain', true, true));
    expect(tf.max(tf.abs(pC!)).dataSync()[0]).toBe(0);
    expect(tf.max(tf.abs(pW!)).dataSync()[0]).toBeGreaterThan(0);
    const [mW, mB, mC] = grads(loss('main', true, true));
    const [oW, oB] = grads(loss('main', false, true)); // predictor: contrastive only
    const [, , gC] = grads(loss('main', true, false)); // codes: through the gates only
    expectClose(mW!, oW!.dataSync(), { name: `main: dW = contrastive-only dW [${backend}]`, atol: 1e-6 });
    expectClose(mB!, oB!.dataSync(), { name: `main: db = contrastive-only db [${backend}]`, atol: 1e-6 });
    expectClose(mC!, gC!.dataSync(), { name: `main: dCodes = gate-only dCodes [${backend}]`, atol: 1e-6 });
    expect(tf.max(tf.abs(mC!)).dataSync()[0]).toBeGreaterThan(0);
    // Only the assigned codes receive gradient.
    const o = router.trainForward(x, noise, 'main');
    const assigned = new Set(Array.from(o.assignment.dataSync()));
    const rows = mC!.arraySync() as number[][];
    rows.forEach((row, k) => expect(row.some((v) => v !== 0)).toBe(assigned.has(k)));
    tf.dispose([pW!, pB!, pC!, mW!, mB!, mC!, oW!, oB!, gC!, o as unknown as tf.TensorContainer, x, c1, c2, noise.codebook, noise.assignment, noise.step]);
    router.dispose();
  });

  it('a training step (forward + gradients + embeddingGs update) does not leak tensors', async () => {
    const router = PromptRouter.init(layout, { inputDim: 12, numCodes: 3 }, 6);
    const rng = Rng.forKey(10, 'leak');
    const x = tf.tensor2d(rng.normal(4 * 12), [4, 12]);
    const noise = {
      codebook: tf.tensor2d(sampleGumbelNoise(rng, 3, L), [3, L]),
      assignment: tf.tensor2d(sampleGumbelNoise(rng, 4, L), [4, L]),
      step: tf.tensor2d(sampleGumbelNoise(rng, 4, L), [4, L]),
    };
    const opt = tf.train.adam(1e-3);
    await expectNoTensorLeak(() => {
      let codes: tf.Tensor2D | null = null;
      opt.minimize(() => {
        const o = router.trainForward(x, noise, 'main');
        codes = tf.keep(o.codeSamples);
        return tf.add(tf.mean(o.gates), tf.mean(o.archVectorNormalized)) as tf.Scalar;
      }, false, router.variables());
      router.codebook.setEmbeddingGs(codes!);
      tf.dispose(codes!);
    }, { warmup: 2, name: `train step [${backend}]` });
    opt.dispose();
    tf.dispose([x, noise.codebook, noise.assignment, noise.step]);
    router.dispose();
  });

  it('init: orthogonal predictor heads and codes, zero bias, gates ≈ 1 (+3 offset)', () => {
    const router = PromptRouter.init(layout, { inputDim: 40, numCodes: 4 }, 1);
    const W0 = router.predictor.weight!.arraySync() as number[][]; // [in, L]
    let col = 0;
    for (const width of [...layout.widthGates.map((g) => g.width), layout.depthEntries]) {
      for (let a = col; a < col + width; a++) {
        for (let b = col; b < col + width; b++) {
          let dot = 0;
          for (let i = 0; i < 40; i++) dot += W0[i]![a]! * W0[i]![b]!;
          expect(dot).toBeCloseTo(a === b ? 1 : 0, 5);
        }
      }
      col += width;
    }
    expect(router.predictor.bias!.dataSync().every((v) => v === 0)).toBe(true);
    const E = router.codebook.embedding.arraySync() as number[][];
    for (let a = 0; a < 4; a++) for (let b = 0; b < 4; b++) expect(E[a]!.reduce((s, v, i) => s + v * E[b]![i]!, 0)).toBeCloseTo(a === b ? 1 : 0, 5);
    const gates = tf.tidy(() => router.gumbel(router.codebook.embedding as tf.Tensor as tf.Tensor2D, tf.zeros([4, L]) as tf.Tensor2D));
    const g = gates.dataSync();
    let open = 0;
    for (let i = 0; i < g.length; i++) if (g[i]! >= 0.5) open++;
    expect(open / g.length).toBeGreaterThan(0.9);
    gates.dispose();
    router.dispose();
    expect(gumbelOptions(router.config)).toEqual(OPTS);
  });
});

// Autodiff against finite differences runs on cpu (STYLE.md §3 Tests: cpu is the correctness oracle).
describeBackends('router Gumbel-sigmoid gradient', () => {
  const layout = tinyLayout();
  const L = layout.vectorLength;
  const W = layout.widthEntries;

  it('Gumbel-sigmoid gradient matches finite differences (no threshold crossings)', () => {
    const rng = Rng.forKey(7, 'gs');
    const logits = tf.tensor2d(rng.normal(2 * L, -3, 0.5), [2, L]);
    const g = sampleGumbelNoise(rng, 2, L);
    // x_0 = Σ softmax = 1 up to rounding and λ_0 = log(x_0 + 1e-6) − log1p(−(x_0 − 1e-6)) amplifies that rounding
    // 1e6-fold, so t_0 is numerical noise unless saturated (it saturates at T = 0.4); saturate it with very negative noise.
    for (let b = 0; b < 2; b++) g[b * L + W] = -100;
    const noise = tf.tensor2d(g, [2, L]);
    const c = tf.tensor2d(rng.normal(2 * L), [2, L]);
    gradCheck((x) => tf.sum(tf.mul(gumbelSigmoid(x as tf.Tensor2D, noise, layout, { ...OPTS, temperature: 4 }), c)) as tf.Scalar, [logits], { eps: 1e-3, probes: 40 });
    tf.dispose([logits, noise, c]);
  });
}, ['cpu']);

describe('oneHotRows', () => {
  it('builds one-hot rows for any K, including a single code', () => {
    const one = oneHotRows(tf.tensor1d([0, 0, 0], 'int32'), 1);
    expect(one.shape).toEqual([3, 1]);
    expect(Array.from(one.dataSync())).toEqual([1, 1, 1]);
    const three = oneHotRows(tf.tensor1d([2, 0], 'int32'), 3);
    expect(Array.from(three.dataSync())).toEqual([0, 0, 1, 1, 0, 0]);
    tf.dispose([one, three]);
  });
});
