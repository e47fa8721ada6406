import * as tf from '@tensorflow/tfjs-core';
import { OrtModel, Rng } from '@aptp/core';
import { describeBackends, expectClose, expectNoTensorLeak } from '@aptp/core/testing';
import { gumbelOptions } from './config';
import { OrtMatMul, evalGatesNormalized, normalizedCodesTransposed } from './fastRoute';
import { gumbelSigmoid } from './gumbel';
import { normalizeRows, widthDepthNormalize } from './normalize';
import { PromptRouter } from './router';
import { tinyLayout } from './testLayout';

/**
 * The onnxruntime + host-loop routing path (`fastRoute.ts`) against the tfjs path: identical expert ids in both modes,
 * scores and normalised gates equal up to float32 summation order, on seeded random routers.
 */

/** A random router whose gates are mixed (logits spread around the threshold) and whose codes differ. */
function randomRouter(seed: number, numCodes: number, extra: Record<string, unknown> = {}): PromptRouter {
  const layout = tinyLayout();
  const router = PromptRouter.init(layout, { inputDim: 24, numCodes, evalBatchSize: 7, ...extra }, seed);
  const L = layout.vectorLength;
  const rng = Rng.forKey(seed, 'fast-route-test');
  if (router.predictor.bias) router.predictor.bias.assign(tf.tensor1d(rng.normal(L).map((v) => v - 3)));
  // Codes = soft gates of K random prompts, so that different prompts prefer different codes.
  const codes = tf.tidy(() => router.gumbel(router.predictor.forward(prompts(seed + 100, numCodes, 24)), tf.tensor2d(rng.normal(numCodes * L), [numCodes, L])));
  router.codebook.setEmbeddingGs(codes);
  codes.dispose();
  return router;
}

function prompts(seed: number, rows: number, dim: number): tf.Tensor2D {
  const rng = Rng.forKey(seed, 'fast-route-x');
  return tf.tensor2d(rng.normal(rows * dim).map((v) => 2 * v), [rows, dim]);
}

describeBackends('fast routing (onnxruntime + host loops)', (backend) => {
  it('gives the tfjs path\'s expert ids in both modes (random routers, reference / zero / explicit noise)', async () => {
    let compared = 0;
    for (const seed of [1, 2, 3, 4]) {
      const K = 3 + seed;
      const router = randomRouter(seed, K);
      const B = 17 + 5 * seed; // several eval-noise periods (evalBatchSize 7)
      const x = prompts(seed, B, 24);
      const explicit = tf.tensor2d(Rng.forKey(seed, 'noise').normal(B * router.layout.vectorLength), [B, router.layout.vectorLength]);
      for (const noise of ['reference', 'none', explicit] as const) {
        for (const mode of ['cosine', 'balanced'] as const) {
          const capacities = mode === 'balanced' ? Math.ceil(B / K) : undefined;
          const ref = await router.route(x, { mode, noise, capacities, engine: 'tfjs' });
          const fast = await router.route(x, { mode, noise, capacities });
          expect(Array.from(fast.expert)).toEqual(Array.from(ref.expert));
          expect(Array.from(fast.counts)).toEqual(Array.from(ref.counts));
          expectClose(fast.scores, ref.scores, { name: `scores seed ${seed} ${mode} [${backend}]`, rtol: 1e-5 });
          compared++;
        }
      }
      // The routing is not degenerate: prompts go to more than one expert.
      const r = await router.route(x);
      expect(new Set(Array.from(r.expert)).size).toBeGreaterThan(1);
      tf.dispose([x, explicit]);
      router.dispose();
    }
    expect(compared).toBe(24);
  });

  it('normalised gates equal normalizeRows(N(GS(e))), including the non-zero rule and the single-arch baseline', async () => {
    const layout = tinyLayout();
    const router = randomRouter(9, 4);
    const L = layout.vectorLength;
    const rows = 6;
    const rng = Rng.forKey(9, 'logits');
    // Rows 0–1: every width gate closed (the non-zero rule fires everywhere); rows 2–5: mixed gates.
    const logits = new Float32Array(rows * L);
    for (let i = 0; i < logits.length; i++) logits[i] = i < 2 * L ? -30 : 3 * rng.normal(1)[0]! - 3;
    const noise = Float32Array.from(rng.normal(rows * L));
    const opts = gumbelOptions(router.config);
    const expected = tf.tidy(() => normalizeRows(widthDepthNormalize(gumbelSigmoid(tf.tensor2d(logits, [rows, L]), tf.tensor2d(noise, [rows, L]), layout, opts), layout)).dataSync() as Float32Array);
    const ours = evalGatesNormalized(logits, noise, rows, layout, opts);
    expectClose(ours, expected, { name: `normalised gates [${backend}]`, atol: 1e-6, rtol: 0 });
    const codes = (await router.codebook.embeddingGs.data()) as Float32Array;
    const codesExpected = tf.tidy(() => tf.transpose(normalizeRows(widthDepthNormalize(router.codebook.embeddingGs, layout))).dataSync() as Float32Array);
    expectClose(normalizedCodesTransposed(codes, 4, layout), codesExpected, { name: `normalised codes [${backend}]`, atol: 1e-6, rtol: 0 });
    router.dispose();

    const single = randomRouter(10, 3, { singleArchParam: true });
    const x = prompts(10, 9, 24);
    for (const mode of ['cosine', 'balanced'] as const) {
      const ref = await single.route(x, { mode, engine: 'tfjs' });
      const fast = await single.route(x, { mode });
      expect(Array.from(fast.expert)).toEqual(Array.from(ref.expert));
    }
    x.dispose();
    single.dispose();
  });

  it('does not leak tensors and rejects bad inputs', async () => {
    const router = randomRouter(5, 4);
    const x = prompts(5, 10, 24);
    await expectNoTensorLeak(async () => {
      await router.route(x);
      await router.route(x, { mode: 'balanced' });
    }, { name: `fast route [${backend}]` });
    const wrong = tf.zeros([3, 5]) as tf.Tensor2D;
    await expect(router.route(wrong)).rejects.toThrow(/prompt-embedding shape/);
    await expect(router.route(x, { engine: 'gpu' as 'ort' })).rejects.toThrow(/routing engine/);
    wrong.dispose();
    x.dispose();
    router.dispose();
    const after = prompts(5, 2, 24);
    await expect(router.route(after)).rejects.toThrow(/dispose/);
    after.dispose();
  });
});

describe('the onnxruntime session of the fast path', () => {
  afterEach(() => jest.restoreAllMocks());

  it('OrtMatMul computes a·b + bias, waits for a run in flight, releases once and then refuses to run', async () => {
    const mm = new OrtMatMul();
    expect(mm.hasSession).toBe(false);
    // [2, 3] · [3, 2] + [2], small integers: exact in float32
    const a = Float32Array.from([1, 2, 3, 4, 5, 6]);
    const b = Float32Array.from([1, -1, 0, 2, 3, 1]);
    expect(Array.from(await mm.run(a, b, 2, 3, 2, Float32Array.from([10, 20])))).toEqual([20, 26, 32, 32]);
    expect(mm.hasSession).toBe(true);
    const release = jest.spyOn(OrtModel.prototype, 'dispose');
    const running = mm.run(a, b, 2, 3, 2);
    const first = mm.dispose();
    expect(mm.dispose()).toBe(first); // idempotent
    expect(Array.from(await running)).toEqual([10, 6, 22, 12]); // the run in flight finishes on the live session
    await first;
    expect(release).toHaveBeenCalledTimes(1);
    expect((release.mock.contexts[0] as OrtModel).disposed).toBe(true);
    expect([mm.disposed, mm.hasSession]).toEqual([true, false]);
    await expect(mm.run(a, b, 2, 3, 2)).rejects.toThrow(/fast routing matmul used after dispose\(\)/);
    await mm.dispose();
    expect(release).toHaveBeenCalledTimes(1);
  });

  it('PromptRouter owns one session: created by the first ort route, released by dispose(), none for tfjs', async () => {
    const load = jest.spyOn(OrtModel, 'load');
    const release = jest.spyOn(OrtModel.prototype, 'dispose');
    const x = prompts(11, 5, 24);
    const tfjsOnly = randomRouter(11, 3);
    await tfjsOnly.route(x, { engine: 'tfjs' });
    await tfjsOnly.dispose();
    expect(load).not.toHaveBeenCalled();

    const router = randomRouter(12, 3);
    await router.route(x);
    await router.route(x, { mode: 'balanced' });
    expect(load).toHaveBeenCalledTimes(1);
    const session = (await load.mock.results[0]!.value) as OrtModel;
    expect(session.disposed).toBe(false);
    await router.dispose();
    expect(session.disposed).toBe(true);
    expect(release).toHaveBeenCalledTimes(1);
    await router.dispose(); // idempotent
    expect(release).toHaveBeenCalledTimes(1);
    await expect(router.route(x)).rejects.toThrow(/PromptRouter used after dispose\(\)/);
    expect(load).toHaveBeenCalledTimes(1);

    // disposed while a route reads its inputs: the route fails and no session is left behind
    const racing = randomRouter(13, 3);
    const pending = racing.route(x);
    await racing.dispose();
    await expect(pending).rejects.toThrow();
    expect(load).toHaveBeenCalledTimes(1);
    x.dispose();
  });
});
