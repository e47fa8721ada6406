/**
 * DDPM training helpers (Ho et al. 2020, "Denoising Diffusion Probabilistic Models"; v-parameterisation from
 * Salimans & Ho 2022, "Progressive Distillation", §4 and App. D), as diffusers' `DDPMScheduler` provides them to
 * training scripts:
 *
 * - `addNoise`     forward process q(x_t | x_0), DDPM eq. 4:   x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε
 * - `getVelocity`  v-target, Salimans & Ho eq. (App. D):       v   = √ᾱ_t·ε − √(1−ᾱ_t)·x_0
 * - `getTarget`    the regression target of the config's `prediction_type` (ε, v or x_0)
 * - `snr`          signal-to-noise ratio SNR_t = ᾱ_t / (1−ᾱ_t) (Kingma et al. 2021, eq. 2), used by the min-SNR
 *                  weighting of APTP.md §5.1 (the weighting itself lives in @aptp/losses)
 *
 * All take one timestep per batch item (`[B]`), are plain tfjs ops (differentiable in the samples and the noise) and
 * return tensors the caller owns. Coefficients are float32 (`√ᾱ_t` rounded to float32, as the reference).
 * Ancestral DDPM sampling (`step`) is not implemented: sampling uses DDIM, PNDM or DPM-Solver.
 */
import * as tf from '@tensorflow/tfjs-core';
import { InputError } from '../errors';
import { trainSchedule } from './betas';
import { resolveSchedulerConfig, schedulerConfigFromJson, type ResolveOptions, type SchedulerConfig } from './schedulerConfig';

const f32 = Math.fround;

/** One integer timestep per batch item: a host list or an int32 tensor `[B]`. */
export type TimestepsLike = readonly number[] | Int32Array | tf.Tensor1D;

export class DDPMScheduler {
  readonly className = 'DDPMScheduler' as const;
  readonly config: Readonly<SchedulerConfig>;
  readonly betas: Float32Array;
  readonly alphas: Float32Array;
  readonly alphasCumprod: Float32Array;
  /** √ᾱ_t and √(1−ᾱ_t), float32 (diffusers `alphas_cumprod ** 0.5`, `(1 − alphas_cumprod) ** 0.5`). */
  private readonly sqrtAlphasCumprod: Float32Array;
  private readonly sqrtOneMinusAlphasCumprod: Float32Array;

  constructor(config: Partial<SchedulerConfig> = {}, options: ResolveOptions = {}) {
    this.config = Object.freeze(resolveSchedulerConfig('DDPMScheduler', config, options));
    const s = trainSchedule(this.config);
    this.betas = s.betas;
    this.alphas = s.alphas;
    this.alphasCumprod = s.alphasCumprod;
    this.sqrtAlphasCumprod = s.alphasCumprod.map((a) => Math.sqrt(a));
    this.sqrtOneMinusAlphasCumprod = s.alphasCumprod.map((a) => Math.sqrt(f32(1 - a)));
  }

  /** From a snake_case `scheduler_config.json` object. */
  static fromJson(raw: unknown, options: ResolveOptions = {}): DDPMScheduler {
    return new DDPMScheduler(schedulerConfigFromJson('DDPMScheduler', raw, options), options);
  }

  /** x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε (DDPM eq. 4). `originalSamples`, `noise`: `[B, ...]`; `timesteps`: `[B]`. */
  addNoise(originalSamples: tf.Tensor, noise: tf.Tensor, timesteps: TimestepsLike): tf.Tensor {
    checkSameShape('addNoise', originalSamples, noise, 'noise');
    return tf.tidy(() => {
      const a = this.perSample(this.sqrtAlphasCumprod, timesteps, originalSamples, 'addNoise');
      const s = this.perSample(this.sqrtOneMinusAlphasCumprod, timesteps, originalSamples, 'addNoise');
      return tf.add(tf.mul(a, originalSamples), tf.mul(s, noise));
    });
  }

  /** v = √ᾱ_t·ε − √(1−ᾱ_t)·x_0 (Salimans & Ho 2022, App. D). */
  getVelocity(sample: tf.Tensor, noise: tf.Tensor, timesteps: TimestepsLike): tf.Tensor {
    checkSameShape('getVelocity', sample, noise, 'noise');
    return tf.tidy(() => {
      const a = this.perSample(this.sqrtAlphasCumprod, timesteps, sample, 'getVelocity');
      const s = this.perSample(this.sqrtOneMinusAlphasCumprod, timesteps, sample, 'getVelocity');
      return tf.sub(tf.mul(a, noise), tf.mul(s, sample));
    });
  }

  /**
   * The training target for the config's `prediction_type`: ε (`epsilon`), v (`v_prediction`) or x_0 (`sample`).
   * `originalSamples` is x_0 (the clean latents). Always a new tensor.
   */
  getTarget(originalSamples: tf.Tensor, noise: tf.Tensor, timesteps: TimestepsLike): tf.Tensor {
    switch (this.config.predictionType) {
      case 'epsilon':
        checkSameShape('getTarget', originalSamples, noise, 'noise');
        return noise.clone();
      case 'v_prediction':
        return this.getVelocity(originalSamples, noise, timesteps);
      case 'sample':
        checkSameShape('getTarget', originalSamples, noise, 'noise');
        return originalSamples.clone();
    }
  }

  /**
   * x̂_0 implied by a model output of the config's `prediction_type` at x_t (the inverse of {@link getTarget}):
   * `(x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t` (epsilon), `√ᾱ_t·x_t − √(1−ᾱ_t)·v̂` (v_prediction), the output itself (sample). Not
   * clipped. Always a new tensor.
   */
  predictOriginalSample(modelOutput: tf.Tensor, sample: tf.Tensor, timesteps: TimestepsLike): tf.Tensor {
    checkSameShape('predictOriginalSample', sample, modelOutput, 'modelOutput');
    if (this.config.predictionType === 'sample') return modelOutput.clone();
    return tf.tidy(() => {
      const a = this.perSample(this.sqrtAlphasCumprod, timesteps, sample, 'predictOriginalSample');
      const s = this.perSample(this.sqrtOneMinusAlphasCumprod, timesteps, sample, 'predictOriginalSample');
      return this.config.predictionType === 'epsilon' ? tf.div(tf.sub(sample, tf.mul(s, modelOutput)), a) : tf.sub(tf.mul(a, sample), tf.mul(s, modelOutput));
    });
  }

  /** SNR_t = ᾱ_t/(1−ᾱ_t) = (√ᾱ_t / √(1−ᾱ_t))², float32, one value per timestep (diffusers `compute_snr`). */
  snrValues(timesteps: readonly number[] | Int32Array): Float32Array {
    const t = this.checkTimesteps(timesteps, null, 'snr');
    return Float32Array.from(t, (ti) => {
      const r = f32(this.sqrtAlphasCumprod[ti]! / this.sqrtOneMinusAlphasCumprod[ti]!);
      return r * r;
    });
  }

  /** `snrValues` as a tensor `[B]` (timesteps may be an int32 tensor). */
  snr(timesteps: TimestepsLike): tf.Tensor1D {
    if (timesteps instanceof tf.Tensor) {
      return tf.tidy(() => {
        const r = tf.div(gatherTable(this.sqrtAlphasCumprod, timesteps), gatherTable(this.sqrtOneMinusAlphasCumprod, timesteps));
        return tf.square(r) as tf.Tensor1D;
      });
    }
    return tf.tensor1d(this.snrValues(timesteps), 'float32');
  }

  /** A coefficient per batch item, shaped `[B, 1, 1, …]` to broadcast over `like`. */
  private perSample(table: Float32Array, timesteps: TimestepsLike, like: tf.Tensor, op: string): tf.Tensor {
    const batch = like.shape[0] ?? 1;
    const shape = [-1, ...like.shape.slice(1).map(() => 1)];
    if (timesteps instanceof tf.Tensor) {
      if (timesteps.rank !== 1 || (timesteps.shape[0] !== batch && timesteps.shape[0] !== 1)) {
        throw new InputError(`DDPMScheduler.${op}: one timestep per batch item`, { code: 'E_SHAPE', field: 'timesteps', expected: [batch], found: timesteps.shape });
      }
      return tf.reshape(gatherTable(table, timesteps), shape);
    }
    const t = this.checkTimesteps(timesteps, batch, op);
    return tf.tensor(Float32Array.from(t, (ti) => table[ti]!), [t.length, ...shape.slice(1)], 'float32');
  }

  private checkTimesteps(timesteps: readonly number[] | Int32Array, batch: number | null, op: string): number[] {
    const t = Array.from(timesteps);
    if (batch !== null && t.length !== batch && t.length !== 1) {
      throw new InputError(`DDPMScheduler.${op}: one timestep per batch item`, { code: 'E_SHAPE', field: 'timesteps', expected: `${batch} values`, found: `${t.length} values` });
    }
    const bad = t.find((ti) => !Number.isInteger(ti) || ti < 0 || ti >= this.config.numTrainTimesteps);
    if (bad !== undefined) {
      throw new InputError(`DDPMScheduler.${op}: timestep out of range`, {
        code: 'E_ARGUMENT', field: 'timesteps', expected: `integers in [0, ${this.config.numTrainTimesteps - 1}]`, found: bad,
      });
    }
    return t;
  }
}

function gatherTable(table: Float32Array, timesteps: tf.Tensor): tf.Tensor {
  return tf.gather(tf.tensor1d(table, 'float32'), tf.cast(timesteps, 'int32'));
}

function checkSameShape(op: string, a: tf.Tensor, b: tf.Tensor, name: string): void {
  if (a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])) {
    throw new InputError(`DDPMScheduler.${op}: shapes differ`, { code: 'E_SHAPE', field: name, expected: a.shape, found: b.shape });
  }
}
