import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { HostTensor } from '@aptp/core';
import { describeBackends, describeGolden, expectClose, expectNoTensorLeak, readGoldenJson, readGoldenTensors } from '@aptp/core/testing';
import { ArchitectureLayout, architectureLayout, readUNetConfig } from '@aptp/unet-gating';
import { gumbelOptions } from './config';
import { evalGumbelNoise, gumbelFromUniform, gumbelSigmoidDetailed } from './gumbel';
import { loadReferenceRouter } from './io/reference';
import { widthDepthNormalize } from './normalize';
import { PromptRouter } from './router';
import { routingScores, sinkhornPlan } from './routing';
import { torchUniformStream } from './torchNoise';

// golden/aptp/README.md §6: tolerance for router soft values, normalised vectors, similarities, Q: 1e-5·max(1, |ref|);
// hard gates, non-zero flags and assignments exact.
const RTOL = 1e-5;

interface RouterJson {
  train_idx: number[];
  eval_idx: number[];
  nonzero_rule_applied_z: number[][];
  nonzero_rule_applied_codebook: number[][];
}

describeGolden('aptp/router', 'router vs the APTP reference (golden aptp/router)', (dir) => {
  let io: Map<string, HostTensor>;
  let json: RouterJson;
  let layout: ArchitectureLayout;
  const t = (name: string): tf.Tensor2D => {
    const h = io.get(name);
    if (!h) throw new Error(`golden tensor ${name} missing`);
    return tf.tensor2d(h.data as Float32Array, h.shape as [number, number]);
  };
  const ref = (name: string): Float32Array => io.get(name)!.data as Float32Array;

  beforeAll(() => {
    io = readGoldenTensors(path.join(dir, 'router_io.safetensors'));
    json = readGoldenJson<RouterJson>(path.join(dir, 'router.json'));
    layout = architectureLayout(readUNetConfig(path.join(dir, '..', 'config.json')));
  });

  it('reproduces the eval-mode uniform stream and noise bit for bit (torch seed-0 MT19937)', () => {
    const stream = torchUniformStream(84);
    expect(Array.from(stream)).toEqual(Array.from(ref('eval.seed0_uniform_stream')));
    expectClose(evalGumbelNoise(6, layout), ref('eval.noise_z.g'), { name: 'eval.noise_z.g', atol: 1e-6 });
    expectClose(gumbelFromUniform(ref('train.noise_z.u')), ref('train.noise_z.g'), { name: 'train.noise_z.g from u', atol: 2e-6 });
  });

  describeBackends('router', (backend) => {
    let router: PromptRouter;
    beforeAll(() => {
      router = loadReferenceRouter(dir, { layout });
    });
    afterAll(() => router.dispose());

    it('loads the released layout with the reference settings', () => {
      expect(router.config).toMatchObject({ numCodes: 4, inputDim: 24, temperature: 0.4, base: 3, sinkhornEpsilon: 0.05, sinkhornIterations: 3, optimalTransport: true, nonZeroWidth: true });
      expect(layout.vectorLength).toBe(426);
    });

    it('predictor logits e', () => {
      const e = tf.tidy(() => router.predictor.forward(t('x')));
      expectClose(e, ref('e'), { name: `e [${backend}]`, rtol: RTOL, shape: [6, 426] });
      e.dispose();
    });

    it('Gumbel-sigmoid of the codes and of e: soft gates, depth before scatter, non-zero rule, hard gates', () => {
      const opts = gumbelOptions(router.config);
      tf.tidy(() => {
        const cases = [
          { logits: router.codebook.embedding as tf.Tensor as tf.Tensor2D, noise: 'train.noise_codebook.g', out: 'train.embedding_gs', depth: 'train.codebook_depth_before_scatter', plain: 'train.codebook_gs_without_nonzero_rule', flags: json.nonzero_rule_applied_codebook },
          { logits: t('e'), noise: 'train.noise_z.g', out: 'train.z_gs', depth: 'train.z_depth_before_scatter', plain: 'train.z_gs_without_nonzero_rule', flags: json.nonzero_rule_applied_z },
          { logits: t('e'), noise: 'eval.noise_z.g', out: 'eval.z_gs', depth: 'eval.z_depth_before_scatter', plain: null, flags: null },
          { logits: t('e'), noise: 'contrastive.noise_z.g', out: 'contrastive.z_gs', depth: null, plain: null, flags: null },
        ];
        for (const c of cases) {
          const r = gumbelSigmoidDetailed(c.logits, t(c.noise), layout, opts);
          expectClose(r.gates, ref(c.out), { name: `${c.out} [${backend}]`, rtol: RTOL });
          if (c.depth) expectClose(r.depthBeforeScatter, ref(c.depth), { name: `${c.depth} [${backend}]`, rtol: RTOL });
          if (c.flags) expect(Array.from(r.nonZeroRuleApplied.dataSync())).toEqual(c.flags.flat());
          if (c.plain) {
            const p = gumbelSigmoidDetailed(c.logits, t(c.noise), layout, { ...opts, nonZeroWidth: false });
            expectClose(p.gates, ref(c.plain), { name: `${c.plain} [${backend}]`, rtol: RTOL });
          }
          if (c.out === 'train.z_gs') expect(Array.from(tf.cast(tf.greaterEqual(r.gates, 0.5), 'float32').dataSync())).toEqual(Array.from(ref('train.z_gs_hard')));
          if (c.out === 'train.embedding_gs') expect(Array.from(tf.cast(tf.greaterEqual(r.gates, 0.5), 'float32').dataSync())).toEqual(Array.from(ref('train.embedding_gs_hard')));
        }
      });
      expect(json.nonzero_rule_applied_z.flat().reduce((a, b) => a + b, 0) + json.nonzero_rule_applied_codebook.flat().reduce((a, b) => a + b, 0)).toBe(23);
    });

    it('width_depth_normalize, cosine similarities and the Sinkhorn plan (train mode)', () => {
      tf.tidy(() => {
        const rs = routingScores(t('train.z_gs'), t('train.embedding_gs'), layout);
        expectClose(rs.promptNormalized, ref('train.z_wdn'), { name: `train.z_wdn [${backend}]`, rtol: RTOL });
        expectClose(rs.codesNormalized, ref('train.codes_wdn'), { name: `train.codes_wdn [${backend}]`, rtol: RTOL });
        expectClose(rs.scores, ref('train.cos_sim'), { name: `train.cos_sim [${backend}]`, rtol: RTOL });
        const q = sinkhornPlan(rs.scores, { epsilon: 0.05, iterations: 3 });
        expectClose(q, ref('train.sinkhorn_Q'), { name: `train.sinkhorn_Q [${backend}]`, rtol: RTOL });
        expectClose(widthDepthNormalize(t('contrastive.z_gs'), layout), ref('contrastive.arch_vectors'), { name: `contrastive.arch_vectors [${backend}]`, rtol: RTOL });
      });
    });

    it('training forward end to end: code sample, assignment (train_idx), z_q, contrastive vectors', () => {
      const noise = { codebook: t('train.noise_codebook.g'), assignment: t('train.noise_z.g'), step: t('contrastive.noise_z.g') };
      for (const phase of ['pretrain', 'main'] as const) {
        const out = router.trainForward(t('x'), noise, phase);
        expectClose(out.logits, ref('e'), { name: `e [${backend}]`, rtol: RTOL });
        expectClose(out.codeSamples, ref('train.embedding_gs'), { name: `train.embedding_gs [${backend}]`, rtol: RTOL });
        expectClose(out.assignmentGates, ref('train.z_gs'), { name: `train.z_gs [${backend}]`, rtol: RTOL });
        expectClose(out.assignmentScores, ref('train.cos_sim'), { name: `train.cos_sim [${backend}]`, rtol: RTOL });
        expectClose(out.assignmentPlan, ref('train.sinkhorn_Q'), { name: `train.sinkhorn_Q [${backend}]`, rtol: RTOL });
        expect(Array.from(out.assignment.dataSync())).toEqual(json.train_idx);
        expectClose(out.archVectorQuantized, ref('train.z_q'), { name: `train.z_q [${backend}]`, rtol: RTOL });
        expectClose(out.archVector, ref('contrastive.z_gs'), { name: `contrastive.z_gs [${backend}]`, rtol: RTOL });
        expectClose(out.archVectorNormalized, ref('contrastive.arch_vectors'), { name: `contrastive.arch_vectors [${backend}]`, rtol: RTOL });
        expectClose(out.gates, ref(phase === 'pretrain' ? 'contrastive.z_gs' : 'train.z_q'), { name: `gates ${phase} [${backend}]`, rtol: RTOL });
        tf.dispose(out as unknown as tf.TensorContainer);
      }
      tf.dispose(noise);
    });

    it('eval mode: stored embedding_gs, reference eval noise, cosine argmax (eval_idx) and hard codes', async () => {
      const before = router.codebook.embeddingGs;
      const sample = t('train.embedding_gs');
      router.codebook.setEmbeddingGs(sample); // the preceding training forward stored C
      sample.dispose();
      expect(before.isDisposed).toBe(true);
      const x = t('x');
      tf.tidy(() => {
        const e = router.predictor.forward(x);
        const a = router.gumbel(e, router.evalNoise(6));
        expectClose(a, ref('eval.z_gs'), { name: `eval.z_gs [${backend}]`, rtol: RTOL });
        const rs = routingScores(a, router.codebook.embeddingGs, layout);
        expectClose(rs.promptNormalized, ref('eval.z_wdn'), { name: `eval.z_wdn [${backend}]`, rtol: RTOL });
        expectClose(rs.codesNormalized, ref('eval.codes_wdn'), { name: `eval.codes_wdn [${backend}]`, rtol: RTOL });
        expectClose(router.scores(x), ref('eval.cos_sim'), { name: `eval.cos_sim [${backend}]`, rtol: RTOL });
      });
      const routed = await router.route(x);
      expect(Array.from(routed.expert)).toEqual(json.eval_idx);
      const hard = router.expertGates(routed.expert);
      expect(Array.from(hard.dataSync())).toEqual(Array.from(ref('eval.z_q_hard')));
      hard.dispose();
      // Balanced routing: capacity 2 per code forces a spread; the result must respect it and beat any other
      // capacity-feasible assignment we can enumerate cheaply (here: it must not be worse than cosine restricted).
      const bal = await router.route(x, { mode: 'balanced', capacities: 2 });
      expect(Math.max(...bal.counts)).toBeLessThanOrEqual(2);
      x.dispose();
    });

    it('training forward and eval routing do not leak tensors', async () => {
      const noise = { codebook: t('train.noise_codebook.g'), assignment: t('train.noise_z.g'), step: t('contrastive.noise_z.g') };
      const x = t('x');
      await expectNoTensorLeak(async () => {
        tf.dispose(router.trainForward(x, noise, 'main') as unknown as tf.TensorContainer);
        await router.route(x);
        await router.route(x, { mode: 'balanced' });
        tf.dispose(router.expertGates([0, 1, 2]));
      }, { name: `router [${backend}]` });
      tf.dispose([x, noise.codebook, noise.assignment, noise.step]);
    });
  });
});
