import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, InputError, ShapeError, type PredictionType } from '@aptp/core';

/**
 * Denoising loss with min-SNR-γ weighting (APTP.md §5.1; reference `Pruner.step` / `FineTuner.step` and
 * `pdm/utils/metric_utils.compute_snr`, after Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting"):
 *
 *   SNR_t = ᾱ_t / (1 − ᾱ_t)           (computed as (√ᾱ_t / √(1 − ᾱ_t))², in float32, as the reference)
 *   ε-prediction:  w_t = min(SNR_t, γ) / SNR_t
 *   v-prediction:  w_t = min(SNR_t + 1, γ) / (SNR_t + 1)
 *   x₀-prediction ("sample", not in the reference): the ε or the v weighting carried to x₀ space, chosen by
 *                  `x0WeightedAs` (default ε):
 *                    as ε: w_t = min(SNR_t, γ)       (‖ε − ε̂‖² = SNR_t·‖x₀ − x̂₀‖²)
 *                    as v: w_t = min(SNR_t + 1, γ)   (‖v − v̂‖² = (SNR_t + 1)·‖x₀ − x̂₀‖²)
 *                  so an x₀ model's loss equals the ε (or v) model's min-SNR loss for the same x₀ error. The v form
 *                  gives the noisy timesteps (SNR < 1), where the prompt decides the layout, ≈ 1 instead of ≈ SNR.
 *   L = mean_b [ w_{t_b} · mean_{c,h,w} (pred_b − target_b)² ]
 *
 * Without γ (reference `snr_gamma: null`) the loss is the plain mean squared error over every element.
 * `target` is ε (epsilon), v = √ᾱ_t·ε − √(1 − ᾱ_t)·x₀ (v_prediction) or x₀ (sample); building it is the scheduler's job.
 */
export type { PredictionType }; // the schedulers' prediction_type (@aptp/core)

const f32 = Math.fround;

/**
 * SNR of every timestep from the training schedule's `alphas_cumprod` (`[num_train_timesteps]`), evaluated in float32
 * exactly as the reference (`(sqrt(ᾱ) / sqrt(1 − ᾱ))**2`).
 */
export function snrFromAlphasCumprod(alphasCumprod: ArrayLike<number>, timesteps: ArrayLike<number>): Float32Array {
  const out = new Float32Array(timesteps.length);
  for (let b = 0; b < timesteps.length; b++) {
    const t = timesteps[b]!;
    if (!Number.isInteger(t) || t < 0 || t >= alphasCumprod.length) {
      throw new InputError('timestep outside the training schedule', { field: `timesteps[${b}]`, expected: `integer in [0, ${alphasCumprod.length})`, found: t });
    }
    const a = f32(alphasCumprod[t]!);
    const ratio = f32(f32(Math.sqrt(a)) / f32(Math.sqrt(f32(1 - a))));
    out[b] = f32(ratio * ratio);
  }
  return out;
}

/** How an x₀ ("sample") loss is weighted: like the min-SNR loss of an ε or of a v model (see above). */
export type X0Weighting = 'epsilon' | 'v_prediction';

/** Min-SNR-γ loss weights `[B]` (float32 as the reference). */
export function minSnrWeights(snr: ArrayLike<number>, gamma: number, predictionType: PredictionType, x0WeightedAs: X0Weighting = 'epsilon'): Float32Array {
  if (!(gamma > 0)) throw new ConfigError('snr gamma must be positive', { field: 'snrGamma', expected: '> 0', found: gamma });
  if (predictionType !== 'epsilon' && predictionType !== 'v_prediction' && predictionType !== 'sample') {
    throw new ConfigError('unknown prediction type', { field: 'predictionType', expected: 'epsilon | v_prediction | sample', found: predictionType });
  }
  if (x0WeightedAs !== 'epsilon' && x0WeightedAs !== 'v_prediction') {
    throw new ConfigError('unknown x0 weighting', { field: 'x0WeightedAs', expected: 'epsilon | v_prediction', found: x0WeightedAs });
  }
  const out = new Float32Array(snr.length);
  for (let b = 0; b < snr.length; b++) {
    if (predictionType === 'sample') {
      out[b] = f32(Math.min(x0WeightedAs === 'v_prediction' ? f32(f32(snr[b]!) + 1) : f32(snr[b]!), f32(gamma)));
      continue;
    }
    // v-prediction: "the velocity objective requires that we add one to SNR values before we divide by them".
    const s = predictionType === 'v_prediction' ? f32(f32(snr[b]!) + 1) : f32(snr[b]!);
    out[b] = f32(Math.min(s, f32(gamma)) / s);
  }
  return out;
}

/** Per-sample mean squared error `[B]`: mean over every non-batch axis of `(pred − target)²` (any layout). */
export function perSampleMse(modelPred: tf.Tensor, target: tf.Tensor): tf.Tensor1D {
  checkSameShape(modelPred, target, 'target');
  return tf.tidy(() => {
    const axes = Array.from({ length: modelPred.rank - 1 }, (_, k) => k + 1);
    const sq = tf.squaredDifference(modelPred, target);
    return (axes.length > 0 ? tf.mean(sq, axes) : sq) as tf.Tensor1D;
  });
}

/**
 * The denoising loss (scalar). `weights` `[B]` from `minSnrWeights`; omitted → plain MSE over all elements.
 */
export function diffusionLoss(modelPred: tf.Tensor, target: tf.Tensor, weights?: ArrayLike<number>): tf.Scalar {
  checkSameShape(modelPred, target, 'target');
  if (weights === undefined) return tf.tidy(() => tf.mean(tf.squaredDifference(modelPred, target)) as tf.Scalar);
  const B = modelPred.shape[0] ?? 1;
  if (modelPred.rank < 1 || weights.length !== B) {
    throw new ShapeError('one min-SNR weight per sample', { field: 'weights', expected: B, found: weights.length });
  }
  return tf.tidy(() => tf.mean(tf.mul(perSampleMse(modelPred, target), tf.tensor1d(Float32Array.from(weights)))) as tf.Scalar);
}

export function checkSameShape(a: tf.Tensor, b: tf.Tensor, field: string): void {
  if (a.shape.length !== b.shape.length || a.shape.some((d, k) => d !== b.shape[k])) {
    throw new ShapeError('tensors must have the same shape', { field, expected: a.shape, found: b.shape });
  }
}
