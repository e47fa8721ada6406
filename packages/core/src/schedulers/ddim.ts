/**
 * DDIM sampler (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models", arXiv:2010.02502), as diffusers 0.31
 * `DDIMScheduler`: the SD 2.1 default scheduler, used by APTP for logging samples (APTP.md §9, §11).
 *
 * Notation (the paper's α_t is our ᾱ_t = `alphasCumprod[t]`):
 *   x_{t−1} = √ᾱ_{t−1} · x̂0  +  √(1 − ᾱ_{t−1} − σ_t²) · ε̂  +  σ_t · z                              (eq. 12)
 *   x̂0 = (x_t − √(1−ᾱ_t)·ε̂) / √ᾱ_t   ("predicted x_0", eq. 12 / eq. 9)
 *   σ_t(η) = η · √((1−ᾱ_{t−1})/(1−ᾱ_t)) · √(1 − ᾱ_t/ᾱ_{t−1})                                     (eq. 16)
 * With v-prediction (Salimans & Ho 2022, §4) x̂0 = √ᾱ_t·x_t − √(1−ᾱ_t)·v and ε̂ = √ᾱ_t·v + √(1−ᾱ_t)·x_t.
 * Below t = 0 the "previous" ᾱ is 1 (`set_alpha_to_one`) or ᾱ_0 (SD 2.1).
 */
import * as tf from '@tensorflow/tfjs-core';
import { InputError } from '../errors';
import { trainSchedule } from './betas';
import {
  Scheduler, SchedulerOutput, SchedulerState, SchedulerStepOptions,
  checkNumInferenceSteps, checkStepInputs, notReady, spacedTimesteps, sqrtF32,
} from './scheduler';
import { resolveSchedulerConfig, schedulerConfigFromJson, type ResolveOptions, type SchedulerConfig } from './schedulerConfig';

const f32 = Math.fround;

export class DDIMScheduler implements Scheduler {
  readonly className = 'DDIMScheduler' as const;
  readonly config: Readonly<SchedulerConfig>;
  readonly betas: Float32Array;
  readonly alphasCumprod: Float32Array;
  /** ᾱ used when the previous timestep is below 0: 1 if `setAlphaToOne`, else ᾱ_0. */
  readonly finalAlphaCumprod: number;
  readonly initNoiseSigma = 1;
  private nSteps: number | null = null;
  private schedule: number[] = [];

  constructor(config: Partial<SchedulerConfig> = {}, options: ResolveOptions = {}) {
    this.config = Object.freeze(resolveSchedulerConfig('DDIMScheduler', config, options));
    const s = trainSchedule(this.config);
    this.betas = s.betas;
    this.alphasCumprod = s.alphasCumprod;
    this.finalAlphaCumprod = this.config.setAlphaToOne ? 1 : s.alphasCumprod[0]!;
  }

  /** From a snake_case `scheduler_config.json` object. */
  static fromJson(raw: unknown, options: ResolveOptions = {}): DDIMScheduler {
    return new DDIMScheduler(schedulerConfigFromJson('DDIMScheduler', raw, options), options);
  }

  get numInferenceSteps(): number | null {
    return this.nSteps;
  }

  get timesteps(): readonly number[] {
    return this.schedule;
  }

  /** Inference timesteps, in order of use (`spacedTimesteps`: leading / linspace / trailing, `steps_offset`). */
  setTimesteps(numInferenceSteps: number): void {
    checkNumInferenceSteps(this.className, numInferenceSteps, this.config.numTrainTimesteps);
    const n = numInferenceSteps;
    const t = spacedTimesteps(this.config, n);
    this.nSteps = n;
    this.schedule = t;
  }

  scaleModelInput(sample: tf.Tensor): tf.Tensor {
    return sample.clone();
  }

  /**
   * One reverse step x_t → x_{t−1}. `modelOutput` is the UNet's ε or v prediction for `sample` at `timestep`.
   * Stateless: steps may be taken in any order. With η > 0, `varianceNoise` (z ~ N(0, I)) must be given.
   */
  step(modelOutput: tf.Tensor, timestep: number, sample: tf.Tensor, options: SchedulerStepOptions = {}): SchedulerOutput {
    if (this.nSteps === null) throw notReady(this.className);
    checkStepInputs(this.className, modelOutput, sample, timestep);
    const eta = options.eta ?? 0;
    const T = this.config.numTrainTimesteps;
    if (timestep < 0 || timestep >= T) {
      throw new InputError('DDIMScheduler.step: timestep out of range', { code: 'E_ARGUMENT', field: 'timestep', expected: `[0, ${T - 1}]`, found: timestep });
    }
    if (eta > 0 && !options.varianceNoise) {
      throw new InputError('DDIMScheduler.step: eta > 0 needs varianceNoise (z ~ N(0, I), e.g. from Rng)', { code: 'E_ARGUMENT', field: 'varianceNoise', found: 'undefined' });
    }

    // 1. previous timestep: t − T/N (diffusers uses the leading ratio for every spacing)
    const prevTimestep = timestep - Math.floor(T / this.nSteps);

    // 2. ᾱ_t, ᾱ_{t−1}, 1 − ᾱ_t (float32 scalars, as the reference)
    const alphaProdT = this.alphasCumprod[timestep]!;
    const alphaProdTPrev = prevTimestep >= 0 ? this.alphasCumprod[prevTimestep]! : this.finalAlphaCumprod;
    const betaProdT = f32(1 - alphaProdT);
    const sqrtA = sqrtF32(alphaProdT);
    const sqrtB = sqrtF32(betaProdT);

    // 5. σ_t(η) (eq. 16)
    const variance = f32(f32(f32(1 - alphaProdTPrev) / betaProdT) * f32(1 - f32(alphaProdT / alphaProdTPrev)));
    const stdDevT = f32(eta * sqrtF32(variance));
    // 7. coefficient of the direction pointing to x_t (eq. 12)
    const dirCoeff = sqrtF32(f32(f32(1 - alphaProdTPrev) - f32(stdDevT * stdDevT)));
    const sqrtAPrev = sqrtF32(alphaProdTPrev);

    const out = tf.tidy(() => {
      // 3. x̂0 and ε̂ from the model output ("predicted x_0" of eq. 12)
      let x0: tf.Tensor;
      let eps: tf.Tensor;
      switch (this.config.predictionType) {
        case 'epsilon':
          x0 = tf.div(tf.sub(sample, tf.mul(sqrtB, modelOutput)), sqrtA);
          eps = modelOutput;
          break;
        case 'v_prediction':
          x0 = tf.sub(tf.mul(sqrtA, sample), tf.mul(sqrtB, modelOutput));
          eps = tf.add(tf.mul(sqrtA, modelOutput), tf.mul(sqrtB, sample));
          break;
        case 'sample':
          x0 = modelOutput;
          eps = tf.div(tf.sub(sample, tf.mul(sqrtA, x0)), sqrtB);
          break;
      }
      // 4. clip x̂0 (off for SD 2.1)
      if (this.config.clipSample) {
        const r = this.config.clipSampleRange;
        x0 = tf.clipByValue(x0, -r, r);
      }
      // 6. optionally re-derive ε̂ from the clipped x̂0 (Glide)
      if (options.useClippedModelOutput) eps = tf.div(tf.sub(sample, tf.mul(sqrtA, x0)), sqrtB);
      // 7.–8. x_{t−1} = √ᾱ_{t−1}·x̂0 + √(1−ᾱ_{t−1}−σ²)·ε̂ (+ σ·z)  (eq. 12)
      let prev = tf.add(tf.mul(sqrtAPrev, x0), tf.mul(dirCoeff, eps));
      if (eta > 0) prev = tf.add(prev, tf.mul(stdDevT, options.varianceNoise!));
      return options.returnPredOriginalSample ? { prevSample: prev, predOriginalSample: x0 === modelOutput ? x0.clone() : x0 } : { prevSample: prev };
    });
    return out as SchedulerOutput;
  }

  /** DDIM keeps no history. */
  reset(): void {}

  getState(): SchedulerState {
    return { className: this.className, numInferenceSteps: this.nSteps, counters: {}, tensors: {} };
  }

  setState(state: SchedulerState): void {
    if (state.className !== this.className) {
      throw new InputError('scheduler state of another class', { code: 'E_STATE', field: 'className', expected: this.className, found: state.className });
    }
    if (state.numInferenceSteps === null) {
      this.nSteps = null;
      this.schedule = [];
    } else {
      this.setTimesteps(state.numInferenceSteps);
    }
  }

  dispose(): void {}
}
