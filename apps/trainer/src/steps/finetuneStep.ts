import * as tf from '@tensorflow/tfjs-core';
import { DDPMScheduler, InputError } from '@aptp/core';
import { blockDistillationLoss, diffusionLoss, distillationLoss, type LossTerm } from '@aptp/losses';
import type { UNet2DConditionModel } from '@aptp/unet-gating';
import type { AdamW } from '../optim/adamW';
import { blockKeys, diffusionWeights } from './pruneStep';

/**
 * One expert fine-tuning step (APTP.md §5 "Fine-tuning total", §6.3; reference `FineTuner.step`):
 *   L = w_ddpm·L_ddpm(min-SNR) + w_block·L_block + w_distill·L_distill
 * student = the physically pruned expert (every weight trainable), teacher = the frozen full teacher UNet (no gates,
 * no gradient). The block term is computed only when its weight is > 0, as in the reference.
 */

export interface FinetuneLossWeights {
  diffusion: number;
  distillation: number;
  block: number;
  /** min-SNR γ; null = plain MSE. */
  snrGamma: number | null;
}

export interface FinetuneStepModel {
  student: UNet2DConditionModel<tf.Tensor>;
  /** The student's trainable variables by name. */
  params: Record<string, tf.Variable>;
  teacher: UNet2DConditionModel<tf.Tensor>;
  scheduler: DDPMScheduler;
  weights: FinetuneLossWeights;
}

export interface FinetuneBatch {
  x0: tf.Tensor4D;
  noise: tf.Tensor4D;
  timesteps: ArrayLike<number>;
  encoderHiddenStates: tf.Tensor3D;
}

export type FinetuneTerms = Pick<Record<LossTerm, number>, 'diffusion' | 'distillation' | 'block'>;

/** Loss, terms and gradients of one step (nothing updated). The caller owns `loss`, `terms` and `grads`. */
export function finetuneStepGradients(model: FinetuneStepModel, batch: FinetuneBatch): { loss: tf.Scalar; terms: Record<keyof FinetuneTerms, tf.Scalar>; grads: Record<string, tf.Tensor> } {
  const { student, teacher, scheduler, weights } = model;
  const B = batch.x0.shape[0];
  if (batch.timesteps.length !== B || batch.noise.shape[0] !== B || batch.encoderHiddenStates.shape[0] !== B) {
    throw new InputError('every batch input needs one row per sample', { field: 'batch', expected: B });
  }
  const t = Int32Array.from(batch.timesteps);
  const snrWeights = diffusionWeights(scheduler, t, weights.snrGamma);
  const fixed = tf.tidy(() => {
    const noisy = scheduler.addNoise(batch.x0, batch.noise, t);
    const target = scheduler.getTarget(batch.x0, batch.noise, t);
    const tt = tf.tensor1d(t, 'int32');
    const out = teacher.forward({ sample: noisy, timestep: tt, encoderHiddenStates: batch.encoderHiddenStates });
    return { noisy, target, tt, teacherOut: out.sample, teacherBlocks: blockKeys(out.blocks) };
  });
  const names = Object.keys(model.params);
  const kept: Partial<Record<keyof FinetuneTerms, tf.Scalar>> = {};
  try {
    const { value, grads } = tf.variableGrads(() => {
      const s = student.forward({ sample: fixed.noisy, timestep: fixed.tt, encoderHiddenStates: batch.encoderHiddenStates });
      const diffusion = diffusionLoss(s.sample, fixed.target, snrWeights);
      const distillation = distillationLoss(s.sample, fixed.teacherOut);
      const block = weights.block > 0 ? blockDistillationLoss(blockKeys(s.blocks), fixed.teacherBlocks) : tf.scalar(0);
      kept.diffusion = tf.keep(diffusion);
      kept.distillation = tf.keep(distillation);
      kept.block = tf.keep(block);
      const parts = [tf.mul(diffusion, weights.diffusion), tf.mul(block, weights.block), tf.mul(distillation, weights.distillation)];
      return tf.addN(parts) as tf.Scalar;
    }, names.map((n) => model.params[n]!));
    const byVar = new Map(names.map((n) => [model.params[n]!.name, n]));
    const named: Record<string, tf.Tensor> = {};
    for (const [v, g] of Object.entries(grads)) named[byVar.get(v)!] = g;
    return { loss: value, terms: kept as Record<keyof FinetuneTerms, tf.Scalar>, grads: named };
  } catch (err) {
    tf.dispose(Object.values(kept));
    throw err;
  } finally {
    tf.dispose([fixed.noisy, fixed.target, fixed.tt, fixed.teacherOut, ...Object.values(fixed.teacherBlocks)]);
  }
}

/** One applied step: gradients and AdamW; a non-finite loss term skips the update (for the loop's NaN guard). */
export async function finetuneStep(model: FinetuneStepModel, batch: FinetuneBatch, optimizer: AdamW): Promise<{ loss: number } & FinetuneTerms> {
  const out = finetuneStepGradients(model, batch);
  try {
    const m = {
      loss: (await out.loss.data())[0]!,
      diffusion: (await out.terms.diffusion.data())[0]!,
      distillation: (await out.terms.distillation.data())[0]!,
      block: (await out.terms.block.data())[0]!,
    };
    if (Object.values(m).every(Number.isFinite)) optimizer.step(out.grads);
    return m;
  } finally {
    tf.dispose([out.loss, ...Object.values(out.terms), ...Object.values(out.grads)]);
  }
}
