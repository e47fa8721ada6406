import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import {
  describeBackends,
  describeGolden,
  expectClose,
  goldenArray,
  GoldenArray,
  goldenPath,
  readGoldenJson,
  readGoldenTensors,
} from '@aptp/core/testing';
import { contrastiveLoss, contrastiveSimilarities } from './contrastive';
import { diffusionLoss, minSnrWeights, perSampleMse, snrFromAlphasCumprod } from './diffusion';
import { BLOCK_KEYS, blockDistillationLoss, distillationLoss } from './distillation';
import { maxLoss, resourceLoss, ResourceLossType, stdLoss } from './resource';

// aptp/README.md §10: losses and scalars within 1e-5·max(1, |ref|).
const TOL = { rtol: 1e-5 };

interface LossesJson {
  contrastive: {
    arch_vector_temperature: number;
    prompt_embedding_temperature: number;
    cases: Record<string, { prompt_embeddings: GoldenArray; arch_vectors: GoldenArray; P_arch: GoldenArray; P_prompt: GoldenArray; loss: number }>;
  };
  resource: {
    p_prime: number;
    cases: ({ resource_ratios: number[]; mean_ratio: number; max_loss: number; std_loss: number } & Record<ResourceLossType, Record<string, number>>)[];
  };
  min_snr: {
    snr_gamma: number;
    prediction_type: 'v_prediction';
    timesteps: number[];
    alphas_cumprod_at_t: number[];
    snr: number[];
    snr_plus_one: number[];
    weights: number[];
    per_sample_mse: number[];
    loss: number;
  };
  distillation: { block_keys: string[]; cases: Record<string, { distillation_loss: number; block_loss: number; per_block_mse: Record<string, number> }> };
}

const f32 = Math.fround;

describeGolden('aptp/losses.json', 'losses vs the reference (aptp/losses.json, losses.safetensors)', (file) => {
  const dir = path.dirname(file);
  const L = readGoldenJson<LossesJson>(file);
  const snrTensors = readGoldenTensors(path.join(dir, 'losses.safetensors'));
  const gated = readGoldenTensors(path.join(dir, 'gated_forward.safetensors'));
  const schedulers = goldenPath('schedulers.json');

  describe('min-SNR weights (host, float32 emulation)', () => {
    const m = L.min_snr;
    it('SNR, SNR + 1 and weights from alphas_cumprod (schedulers.json train_schedule)', () => {
      if (!schedulers) throw new Error('schedulers.json missing from the golden folder');
      const alphas = goldenArray(readGoldenJson<{ train_schedule: { alphas_cumprod: GoldenArray } }>(schedulers).train_schedule.alphas_cumprod).data;
      expectClose(m.timesteps.map((t) => alphas[t]!), m.alphas_cumprod_at_t, { name: 'alphas_cumprod_at_t', ...TOL });
      const snr = snrFromAlphasCumprod(alphas, m.timesteps);
      expectClose(snr, m.snr, { name: 'snr', ...TOL });
      expectClose(Array.from(snr, (s) => f32(s + 1)), m.snr_plus_one, { name: 'snr_plus_one', ...TOL });
      expectClose(minSnrWeights(snr, m.snr_gamma, m.prediction_type), m.weights, { name: 'weights', ...TOL });
    });
  });

  describeBackends('tfjs losses', () => {
    it('contrastive loss and both similarity matrices, for every case', () => {
      for (const [name, c] of Object.entries(L.contrastive.cases)) {
        const P = goldenArray(c.prompt_embeddings);
        const A = goldenArray(c.arch_vectors);
        const p = tf.tensor2d(P.data as Float32Array, P.shape as [number, number]);
        const a = tf.tensor2d(A.data as Float32Array, A.shape as [number, number]);
        const options = { archTemperature: L.contrastive.arch_vector_temperature, promptTemperature: L.contrastive.prompt_embedding_temperature };
        const loss = contrastiveLoss(p, a, options);
        const sims = contrastiveSimilarities(p, a, options);
        try {
          expectClose(loss, c.loss, { name: `${name} loss`, ...TOL });
          expectClose(sims.archSimilarity, c.P_arch.data, { name: `${name} P_arch`, ...TOL });
          expectClose(sims.promptSimilarity, c.P_prompt.data, { name: `${name} P_prompt`, ...TOL });
        } finally {
          tf.dispose([p, a, loss, sims.archSimilarity, sims.promptSimilarity]);
        }
      }
    });

    it('resource loss (log, mae, mse for p\' and p = 0.6), max and std terms', () => {
      for (const [k, c] of L.resource.cases.entries()) {
        const r = tf.tensor1d(c.resource_ratios);
        const out: tf.Tensor[] = [r];
        try {
          for (const type of ['log', 'mae', 'mse'] as const) {
            for (const [key, target] of [['p_prime', L.resource.p_prime], ['p_0.6', 0.6]] as const) {
              const loss = resourceLoss(r, target, type);
              out.push(loss);
              expectClose(loss, c[type][key]!, { name: `case ${k} ${type} ${key}`, ...TOL });
            }
          }
          const mx = maxLoss(r);
          const sd = stdLoss(r);
          out.push(mx, sd);
          expectClose(mx, c.max_loss, { name: `case ${k} max_loss`, ...TOL });
          expectClose(sd, c.std_loss, { name: `case ${k} std_loss`, ...TOL });
        } finally {
          tf.dispose(out);
        }
      }
    });

    it('min-SNR v-prediction loss and per-sample MSE (snr.* tensors)', () => {
      const m = L.min_snr;
      const pred = snrTensors.get('snr.model_pred')!;
      const target = snrTensors.get('snr.target')!;
      const p = tf.tensor(pred.data as Float32Array, pred.shape);
      const t = tf.tensor(target.data as Float32Array, target.shape);
      const mse = perSampleMse(p, t);
      const loss = diffusionLoss(p, t, minSnrWeights(m.snr, m.snr_gamma, m.prediction_type));
      try {
        expectClose(mse, m.per_sample_mse, { name: 'per_sample_mse', ...TOL });
        expectClose(loss, m.loss, { name: 'min-SNR loss', ...TOL });
      } finally {
        tf.dispose([p, t, mse, loss]);
      }
    });

    it('output and block distillation for the soft and hard student gates (teacher = all-ones gates)', () => {
      expect(L.distillation.block_keys).toEqual([...BLOCK_KEYS]);
      const load = (name: string): tf.Tensor => {
        const h = gated.get(name)!;
        return tf.tensor(h.data as Float32Array, h.shape);
      };
      for (const [name, c] of Object.entries(L.distillation.cases)) {
        const student = Object.fromEntries(BLOCK_KEYS.map((k) => [k, load(`${name}.${k}`)]));
        const teacher = Object.fromEntries(BLOCK_KEYS.map((k) => [k, load(`ones.${k}`)]));
        const so = load(`${name}.out_sample`);
        const to = load('ones.out_sample');
        const d = distillationLoss(so, to);
        const b = blockDistillationLoss(student, teacher);
        const perBlock = BLOCK_KEYS.map((k) => distillationLoss(student[k]!, teacher[k]!));
        try {
          expectClose(d, c.distillation_loss, { name: `${name} distillation_loss`, ...TOL });
          expectClose(b, c.block_loss, { name: `${name} block_loss`, ...TOL });
          BLOCK_KEYS.forEach((k, i) => expectClose(perBlock[i]!, c.per_block_mse[k]!, { name: `${name} per_block_mse.${k}`, ...TOL }));
        } finally {
          tf.dispose([so, to, d, b, ...perBlock, ...Object.values(student), ...Object.values(teacher)]);
        }
      }
    });
  });
});
