import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, ShapeError } from '@aptp/core';
import { customGrad, rowGram, rowNormalize, stopGradient } from './tensorOps';

/**
 * Contrastive loss between prompt similarity and architecture similarity (APTP.md §5.5; reference
 * `pdm/losses/contrastive_loss.py`):
 *
 *   Â = rows of A / ‖·‖,  P̂ = rows of P / ‖·‖
 *   P_A = softmax_rows(Â Âᵀ / τ_arch),   P_T = softmax_rows(P̂ P̂ᵀ / τ_prompt)      ([B, B] each)
 *   L = mean over all B² entries of BCE(P_A, P_T) = −[P_T·log P_A + (1 − P_T)·log(1 − P_A)], logs clamped at −100.
 *
 * A are the architecture vectors N(GumbelSigmoid(e)) (not row-normalised) and P the prompt embeddings of the (global)
 * batch. Only A receives a gradient; the prompt side is a constant. The BCE gradient is PyTorch's:
 * ∂L/∂x = (x − y) / max(x·(1 − x), 1e-12) / B².
 */
export interface ContrastiveOptions {
  /** τ for the architecture similarities (reference `arch_vector_temperature`, 0.03). */
  archTemperature?: number;
  /** τ for the prompt similarities (reference `prompt_embedding_temperature`, 0.03). */
  promptTemperature?: number;
}

export const CONTRASTIVE_DEFAULTS = { archTemperature: 0.03, promptTemperature: 0.03 } as const;

const BCE_EPSILON = 1e-12;

/** Mean binary cross-entropy of probabilities `x` against targets `y` with PyTorch's clamp and gradient. */
export const binaryCrossEntropy = customGrad((x: tf.Tensor, y: tf.Tensor, save: tf.GradSaveFunc) => {
  save([x, y]);
  const logX = tf.maximum(tf.log(x), -100);
  const log1mX = tf.maximum(tf.log1p(tf.neg(x)), -100);
  const value = tf.neg(tf.mean(tf.add(tf.mul(y, logX), tf.mul(tf.sub(1, y), log1mX))));
  return {
    value,
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [xs, ys] = saved as [tf.Tensor, tf.Tensor];
      const denom = tf.maximum(tf.mul(xs, tf.sub(1, xs)), BCE_EPSILON);
      const gx = tf.mul(dy, tf.div(tf.div(tf.sub(xs, ys), denom), xs.size));
      return [gx, tf.zerosLike(ys)];
    },
  };
}) as (x: tf.Tensor, y: tf.Tensor) => tf.Scalar;

function temperatures(options: ContrastiveOptions): { tauA: number; tauP: number } {
  const tauA = options.archTemperature ?? CONTRASTIVE_DEFAULTS.archTemperature;
  const tauP = options.promptTemperature ?? CONTRASTIVE_DEFAULTS.promptTemperature;
  for (const [field, v] of [['archTemperature', tauA], ['promptTemperature', tauP]] as const) {
    if (!(v > 0) || !Number.isFinite(v)) throw new ConfigError('temperature must be positive', { field, expected: '> 0', found: v });
  }
  return { tauA, tauP };
}

function checkInputs(promptEmbeddings: tf.Tensor, archVectors: tf.Tensor): void {
  if (promptEmbeddings.rank !== 2 || archVectors.rank !== 2 || promptEmbeddings.shape[0] !== archVectors.shape[0] || archVectors.shape[0] === 0) {
    throw new ShapeError('expected prompt embeddings [B, dp] and architecture vectors [B, L] with the same B', {
      field: 'archVectors',
      expected: `[${promptEmbeddings.shape[0]}, L]`,
      found: archVectors.shape,
    });
  }
}

/** The two row-softmax similarity matrices `[B, B]`: `archSimilarity` (P_A, logged by the reference) and `promptSimilarity` (P_T). */
export function contrastiveSimilarities(
  promptEmbeddings: tf.Tensor2D,
  archVectors: tf.Tensor2D,
  options: ContrastiveOptions = {},
): { archSimilarity: tf.Tensor2D; promptSimilarity: tf.Tensor2D } {
  checkInputs(promptEmbeddings, archVectors);
  const { tauA, tauP } = temperatures(options);
  return tf.tidy(() => {
    const archSimilarity = tf.softmax(tf.div(rowGram(rowNormalize(archVectors)), tauA)) as tf.Tensor2D;
    const p = rowNormalize(stopGradient(promptEmbeddings));
    const promptSimilarity = stopGradient(tf.softmax(tf.div(tf.matMul(p, tf.transpose(p)), tauP)) as tf.Tensor2D);
    return { archSimilarity, promptSimilarity };
  });
}

/** The contrastive loss (scalar), differentiable w.r.t. `archVectors`. */
export function contrastiveLoss(promptEmbeddings: tf.Tensor2D, archVectors: tf.Tensor2D, options: ContrastiveOptions = {}): tf.Scalar {
  return tf.tidy(() => {
    const { archSimilarity, promptSimilarity } = contrastiveSimilarities(promptEmbeddings, archVectors, options);
    return binaryCrossEntropy(archSimilarity, promptSimilarity);
  });
}
