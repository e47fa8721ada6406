import * as tf from '@tensorflow/tfjs-core';
import { InputError, ShapeError } from '@aptp/core';
import { LossesConfig } from './config';

/**
 * The training objective: the weighted sum of the loss terms (APTP.md §5, "Pruning-stage total" and "Fine-tuning
 * total"), summed in the reference's order
 *   L = w_ddpm·L_ddpm + w_res·R + w_cont·L_cont + w_dist·L_distill + w_block·L_block + w_std·L_std + w_max·L_max.
 * Terms not given are left out (fine-tuning passes only diffusion / distillation / block); a term whose weight is 0
 * is skipped entirely, so a NaN in an unused term cannot poison the total.
 */
export const LOSS_TERMS = ['diffusion', 'resource', 'contrastive', 'distillation', 'block', 'std', 'max'] as const;
export type LossTerm = (typeof LOSS_TERMS)[number];
export type LossWeights = Record<LossTerm, number>;
export type LossTerms = Partial<Record<LossTerm, tf.Scalar>>;

/** The weight of every term from a losses config. */
export function lossWeights(config: LossesConfig): LossWeights {
  return {
    diffusion: config.diffusionLoss.weight,
    resource: config.resourceLoss.weight,
    contrastive: config.contrastiveLoss.weight,
    distillation: config.distillationLoss.weight,
    block: config.blockLoss.weight,
    std: config.stdLoss.weight,
    max: config.maxLoss.weight,
  };
}

export interface ObjectiveResult {
  /** The total loss (differentiable). */
  total: tf.Scalar;
  /** `weight · term` for every term that entered the total (new tensors, owned by the caller). */
  weighted: LossTerms;
}

export function objective(terms: LossTerms, weights: LossWeights): ObjectiveResult {
  for (const key of Object.keys(terms)) {
    if (!(LOSS_TERMS as readonly string[]).includes(key)) throw new InputError('unknown loss term', { field: key, expected: LOSS_TERMS.join(', ') });
    const t = terms[key as LossTerm]!;
    if (t.rank !== 0) throw new ShapeError('loss terms must be scalars', { field: key, expected: [], found: t.shape });
  }
  // No tidy: every tensor made here is returned (the caller owns them; inside tf.grads / variableGrads the
  // gradient scope disposes the weighted terms), and addN sums in term order without intermediate partial sums.
  const weighted: LossTerms = {};
  for (const key of LOSS_TERMS) {
    const t = terms[key];
    const w = weights[key];
    if (t === undefined || w === 0) continue;
    weighted[key] = tf.mul(t, w) as tf.Scalar;
  }
  const parts = Object.values(weighted) as tf.Scalar[];
  const total = (parts.length === 0 ? tf.scalar(0) : parts.length === 1 ? tf.clone(parts[0]!) : tf.addN(parts)) as tf.Scalar;
  return { total, weighted };
}

/** Reads the total and the per-term breakdown as numbers (await at a step boundary). */
export async function readObjective(result: ObjectiveResult): Promise<{ total: number } & Partial<Record<LossTerm, number>>> {
  const out: { total: number } & Partial<Record<LossTerm, number>> = { total: (await result.total.data())[0]! };
  for (const key of LOSS_TERMS) {
    const t = result.weighted[key];
    if (t) out[key] = (await t.data())[0]!;
  }
  return out;
}
