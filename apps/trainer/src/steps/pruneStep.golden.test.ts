import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { DDPMScheduler, HostTensor } from '@aptp/core';
import { describeBackends, describeGolden, expectClose, expectNoTensorLeak, readGoldenJson, readGoldenTensors } from '@aptp/core/testing';
import { contrastiveSimilarities, defaultLossesConfig, LOSS_TERMS, type LossTerm } from '@aptp/losses';
import { ArchitecturePredictor, loadReferenceRouter, type PromptRouter, type RouterPhase } from '@aptp/router';
import { aptpLayout, loadUNet, macsModel, prunableTarget, type ArchitectureLayout, type MacsModel, type UNet2DConditionModel } from '@aptp/unet-gating';
import { disposePruneStepOutput, pruneStepGradients, type PruneBatch } from './pruneStep';

// golden/aptp/README.md §8 (one pruning step, both phases) and §10 (tolerances): step scalars 1e-5·max(1, |ref|),
// UNet outputs and gradients 1e-4·max(1, max|ref|), assignments exact, ratios 1e-6.
interface TrainStepJson {
  loss_weights: Record<string, number>;
  pruning_target_p: number;
  snr_gamma: number;
  timesteps: number[];
  modes: Record<RouterPhase, { scalars: Record<string, number>; assignment: number[]; batch_resource_ratios: number[]; p_prime: number }>;
}

const SCALAR_NAME: Record<LossTerm, string> = {
  diffusion: 'diffusion_loss',
  resource: 'resource_loss',
  contrastive: 'contrastive_loss',
  distillation: 'distillation_loss',
  block: 'block_loss',
  std: 'std_loss',
  max: 'max_loss',
};

describeGolden('aptp', 'pruning step vs the APTP reference (golden aptp/train_step)', (dir) => {
  let io: Map<string, HostTensor>;
  let json: TrainStepJson;
  let layout: ArchitectureLayout;
  let macs: MacsModel;
  // SD 2.1 training schedule (scaled-linear betas, v-prediction), as the reference.
  const scheduler = new DDPMScheduler({ betaSchedule: 'scaled_linear', betaStart: 0.00085, betaEnd: 0.012, numTrainTimesteps: 1000, predictionType: 'v_prediction' });
  const host = (name: string): HostTensor => {
    const h = io.get(name);
    if (!h) throw new Error(`golden tensor ${name} missing`);
    return h;
  };
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const t = (name: string): any => tf.tensor(host(name).data as Float32Array, host(name).shape);

  beforeAll(() => {
    io = readGoldenTensors(path.join(dir, 'train_step.safetensors'));
    json = readGoldenJson<TrainStepJson>(path.join(dir, 'train_step.json'));
  });

  describeBackends('pruneStepGradients', (backend) => {
    let unet: UNet2DConditionModel<tf.Tensor>;
    beforeAll(async () => {
      unet = await loadUNet(dir);
      layout = aptpLayout(unet.config);
      macs = macsModel(unet.config, { latentHeight: 16, latentWidth: 16, textTokens: 7 });
    });
    afterAll(() => unet.dispose());

    const batchOf = (): PruneBatch => ({
      x0: t('x0'),
      noise: t('noise'),
      timesteps: Array.from(host('timesteps').data as Float32Array, Number),
      encoderHiddenStates: t('encoder_hidden_states'),
      promptEmbeddings: t('mpnet_embeddings'),
      gumbel: { codebook: t('noise.quantizer_codebook.g'), assignment: t('noise.quantizer_z.g'), step: t('noise.step_z.g') },
    });
    const disposeBatch = (b: PruneBatch): void => tf.dispose([b.x0, b.noise, b.encoderHiddenStates, b.promptEmbeddings, b.gumbel.codebook, b.gumbel.assignment, b.gumbel.step]);

    const routerOf = (): PromptRouter => loadReferenceRouter(path.join(dir, 'router'), { layout });

    for (const phase of ['pretrain', 'main'] as const) {
      it(`${phase}: losses, assignment, ratios, outputs and parameter gradients`, () => {
        const ref = json.modes[phase];
        const losses = defaultLossesConfig();
        expect(losses.resourceLoss.pruningTarget).toBe(json.pruning_target_p);
        const pPrime = prunableTarget(losses.resourceLoss.pruningTarget, macs);
        expect(Math.abs(pPrime - ref.p_prime)).toBeLessThanOrEqual(1e-6);
        const router = routerOf();
        const batch = batchOf();
        const out = pruneStepGradients({ unet, router, scheduler, macs, pPrime, losses }, batch, phase);
        try {
          expect(Array.from(out.assignment.dataSync())).toEqual(ref.assignment);
          expectClose(out.ratios.dataSync(), ref.batch_resource_ratios, { name: `${phase}.batch_resource_ratios`, atol: 1e-6 });
          expectClose(out.teacherOut.dataSync(), host(`${phase}.teacher_out`).data as Float32Array, { name: `${phase}.teacher_out` });
          expectClose(out.studentOut.dataSync(), host(`${phase}.student_out`).data as Float32Array, { name: `${phase}.student_out` });
          expectClose(out.codeSamples.dataSync(), host(`${phase}.embedding_gs_after_step`).data as Float32Array, { name: `${phase}.embedding_gs_after_step`, rtol: 1e-5 });
          if (phase === 'main') expectClose(out.gates.dataSync(), host(`${phase}.arch_vector_quantized`).data as Float32Array, { name: 'main.arch_vector_quantized', rtol: 1e-5 });
          const sims = contrastiveSimilarities(batch.promptEmbeddings, out.archVectorNormalized, { archTemperature: 0.03, promptTemperature: 0.03 });
          expectClose(sims.archSimilarity.dataSync(), host(`${phase}.arch_vector_similarity`).data as Float32Array, { name: `${phase}.arch_vector_similarity`, rtol: 1e-5 });
          tf.dispose([sims.archSimilarity, sims.promptSimilarity]);
          for (const k of LOSS_TERMS) {
            const want = ref.scalars[SCALAR_NAME[k]]!;
            expectClose([out.terms[k].dataSync()[0]!], [want], { name: `${phase}.${SCALAR_NAME[k]}`, rtol: 1e-5 });
          }
          expectClose([out.loss.dataSync()[0]!], [ref.scalars.loss!], { name: `${phase}.loss`, rtol: 1e-5 });
          // Gradients: predictor under the reference names (mh_fc.i), code logits.
          const gw = out.grads['hypernet.weight'];
          const gb = out.grads['hypernet.bias'];
          expect(gw).toBeDefined();
          const named = ArchitecturePredictor.toReferenceNames(layout, gw!.dataSync(), gb ? gb.dataSync() : null, 24);
          for (const [name, g] of Object.entries(named)) {
            const want = host(`${phase}.grad.hypernet.${name}`).data as Float32Array;
            expectClose(g.data as Float32Array, want, { name: `${phase}.grad.hypernet.${name}` });
          }
          const gq = host(`${phase}.grad.quantizer.embedding.weight`).data as Float32Array;
          if (phase === 'pretrain') {
            // §2.6: the codes get no gradient before the main phase (the reference stores zeros).
            expect(gq.every((v) => v === 0)).toBe(true);
            expect(out.grads['quantizer.embedding'] === undefined || out.grads['quantizer.embedding']!.dataSync().every((v) => v === 0)).toBe(true);
          } else {
            expectClose(out.grads['quantizer.embedding']!.dataSync(), gq, { name: 'main.grad.quantizer.embedding.weight' });
          }
        } finally {
          disposePruneStepOutput(out);
          disposeBatch(batch);
          router.dispose();
        }
      });
    }

    // Leak check registered on wasm only (not skipped on cpu: the cpu backend needs minutes for its three steps, and
    // tensor bookkeeping is the same on both backends).
    if (backend === 'wasm') it('does not leak tensors', async () => {
      const router = routerOf();
      const losses = defaultLossesConfig();
      const pPrime = prunableTarget(0.6, macs);
      await expectNoTensorLeak(
        () => {
          const batch = batchOf();
          disposePruneStepOutput(pruneStepGradients({ unet, router, scheduler, macs, pPrime, losses }, batch, 'main'));
          disposeBatch(batch);
        },
        { warmup: 1, steps: 2, name: 'pruneStepGradients' },
      );
      router.dispose();
    });
  });
});
