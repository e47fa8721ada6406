import * as tf from '@tensorflow/tfjs-core';
import { DDPMScheduler, InputError, type HostTensor } from '@aptp/core';
import { blockDistillationLoss, diffusionLoss, distillationLoss, type LossTerm } from '@aptp/losses';
import { createEagerUNet, eagerTensorFactory, hostSource, type TensorFactory, type UNet2DConditionModel, type UNetConfig } from '@aptp/unet-gating';
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

type Kind = 'conv' | 'linear' | 'vector';

/** A pruned expert with every weight a trainable variable, and the way back to diffusers host tensors. */
export interface TrainableExpert {
  unet: UNet2DConditionModel<tf.Tensor>;
  /** Variables by eager key (GEGLU halves of `ff.net.0.proj` are `<key>#0`, `<key>#1`). */
  params: Record<string, tf.Variable>;
  /** Current weights in the diffusers layout and keys. */
  diffusersWeights(): Record<string, HostTensor>;
  dispose(): void;
}

function toDiffusers(t: tf.Tensor, kind: Kind): HostTensor {
  const src = t.dataSync() as Float32Array;
  if (kind === 'vector') return { dtype: 'float32', shape: [...t.shape], data: Float32Array.from(src) };
  if (kind === 'linear') {
    const [i, o] = t.shape as [number, number];
    const out = new Float32Array(src.length);
    for (let a = 0; a < o; a++) for (let b = 0; b < i; b++) out[a * i + b] = src[b * o + a]!;
    return { dtype: 'float32', shape: [o, i], data: out };
  }
  const [kh, kw, i, o] = t.shape as [number, number, number, number];
  const out = new Float32Array(src.length);
  for (let a = 0; a < o; a++) for (let b = 0; b < i; b++) for (let y = 0; y < kh; y++) for (let x = 0; x < kw; x++) out[((a * i + b) * kh + y) * kw + x] = src[((y * kw + x) * i + b) * o + a]!;
  return { dtype: 'float32', shape: [o, i, kh, kw], data: out };
}

/** Builds a physically pruned expert (`pruned: true`: widths from the weights) from diffusers host weights, trainable. */
export function createTrainableExpert(config: UNetConfig, weights: ReadonlyMap<string, HostTensor>, label: string): TrainableExpert {
  const params: Record<string, tf.Variable> = {};
  const kinds = new Map<string, Kind>();
  const wrap = (t: tf.Tensor, key: string, kind: Kind): tf.Tensor => {
    const v = tf.variable(t, true, `${label}/${key}`);
    t.dispose();
    params[key] = v;
    kinds.set(key, kind);
    return v;
  };
  const factory: TensorFactory<tf.Tensor> = {
    conv: (w, k) => wrap(eagerTensorFactory.conv(w, k), k, 'conv'),
    linear: (w, k) => wrap(eagerTensorFactory.linear(w, k), k, 'linear'),
    vector: (v, k) => wrap(eagerTensorFactory.vector(v, k), k, 'vector'),
  };
  const unet = createEagerUNet(config, hostSource(weights), { factory, pruned: true });
  return {
    unet,
    params,
    diffusersWeights() {
      const out: Record<string, HostTensor> = {};
      const parts = new Map<string, HostTensor[]>();
      for (const [key, kind] of kinds) {
        const host = toDiffusers(params[key]!, kind);
        const m = /^(.*)#(\d+)$/.exec(key);
        if (!m) {
          out[key] = host;
          continue;
        }
        const list = parts.get(m[1]!) ?? [];
        list[Number(m[2])] = host;
        parts.set(m[1]!, list);
      }
      for (const [key, list] of parts) {
        const data = new Float32Array(list.reduce((s, p) => s + p.data.length, 0));
        let off = 0;
        for (const p of list) {
          data.set(p.data as Float32Array, off);
          off += p.data.length;
        }
        out[key] = { dtype: 'float32', shape: [list.reduce((s, p) => s + p.shape[0]!, 0), ...list[0]!.shape.slice(1)], data };
      }
      return out;
    },
    dispose() {
      unet.dispose();
    },
  };
}
