/**
 * PNDM sampler in its PLMS form (Liu, Ren, Lin & Zhao 2022, "Pseudo Numerical Methods for Diffusion Models on
 * Manifolds", arXiv:2202.09778), as diffusers 0.31 `PNDMScheduler` with `skip_prk_steps = true` — the scheduler APTP's
 * final evaluation uses (25 steps, APTP.md §9). Stateful: steps must be taken in order from the first timestep.
 *
 * Per call (counter c = number of previous calls, r = T // N, history `ets` of raw model outputs e):
 *   1. prev_t = t − r. If c ≠ 1: keep the last 3 outputs and append e_t. If c = 1 (the step from the first timestep
 *      is recomputed, crowsonkb's PLMS warm-up): do not append, and use prev_t = t, t = t + r.
 *   2. Linear multistep combination ε' (PNDM eq. 12, Adams–Bashforth):
 *        c = 0: e_t (the sample is remembered);  c = 1: (e_t + e_{−1})/2 on the remembered sample (2nd-order warm-up);
 *        2 outputs: (3e_{−1} − e_{−2})/2;  3: (23e_{−1} − 16e_{−2} + 5e_{−3})/12;
 *        4: (55e_{−1} − 59e_{−2} + 37e_{−3} − 9e_{−4})/24.
 *   3. v-prediction: ε' ← √ᾱ_t·ε' + √(1−ᾱ_t)·x_t (Salimans & Ho 2022; applied after the combination, as diffusers).
 *   4. Transfer part φ (PNDM eq. 9, with x_t added to both sides):
 *        x_{t−δ} = √(ᾱ_{t−δ}/ᾱ_t)·x_t − (ᾱ_{t−δ} − ᾱ_t)·ε' / (ᾱ_t·√(1−ᾱ_{t−δ}) + √(ᾱ_t(1−ᾱ_t)ᾱ_{t−δ}))
 *      with ᾱ below t = 0 equal to 1 (`set_alpha_to_one`) or ᾱ_0 (SD 2.1).
 */
import * as tf from '@tensorflow/tfjs-core';
import { InputError } from '../errors';
import { trainSchedule } from './betas';
import {
  Scheduler, SchedulerOutput, SchedulerState,
  checkNumInferenceSteps, checkStepInputs, deserializeTensor, notReady, serializeTensor, spacedTimesteps, sqrtF32,
} from './scheduler';
import { resolveSchedulerConfig, schedulerConfigFromJson, type ResolveOptions, type SchedulerConfig } from './schedulerConfig';

const f32 = Math.fround;

export class PNDMScheduler implements Scheduler {
  readonly className = 'PNDMScheduler' as const;
  readonly config: Readonly<SchedulerConfig>;
  readonly betas: Float32Array;
  readonly alphasCumprod: Float32Array;
  readonly finalAlphaCumprod: number;
  readonly initNoiseSigma = 1;
  private nSteps: number | null = null;
  private schedule: number[] = [];
  /** Number of `step` calls since `setTimesteps`. */
  private counter = 0;
  /** Up to 4 raw model outputs, oldest first (kept clones). */
  private ets: tf.Tensor[] = [];
  /** The sample passed at c = 0, reused at c = 1 (kept clone). */
  private curSample: tf.Tensor | null = null;

  constructor(config: Partial<SchedulerConfig> = {}, options: ResolveOptions = {}) {
    this.config = Object.freeze(resolveSchedulerConfig('PNDMScheduler', config, options));
    const s = trainSchedule(this.config);
    this.betas = s.betas;
    this.alphasCumprod = s.alphasCumprod;
    this.finalAlphaCumprod = this.config.setAlphaToOne ? 1 : s.alphasCumprod[0]!;
  }

  static fromJson(raw: unknown, options: ResolveOptions = {}): PNDMScheduler {
    return new PNDMScheduler(schedulerConfigFromJson('PNDMScheduler', raw, options), options);
  }

  get numInferenceSteps(): number | null {
    return this.nSteps;
  }

  /** N + 1 timesteps: the second one is repeated (the PLMS warm-up recomputes the first step). */
  get timesteps(): readonly number[] {
    return this.schedule;
  }

  setTimesteps(numInferenceSteps: number): void {
    checkNumInferenceSteps(this.className, numInferenceSteps, this.config.numTrainTimesteps);
    const n = numInferenceSteps;
    const asc = spacedTimesteps(this.config, n).reverse();
    // plms_timesteps = concat(ts[:-1], ts[-2:-1], ts[-1:]) reversed
    const plms = n >= 2 ? [...asc.slice(0, -1), asc[asc.length - 2]!, asc[asc.length - 1]!] : [...asc];
    this.schedule = plms.reverse();
    this.nSteps = n;
    this.reset();
  }

  scaleModelInput(sample: tf.Tensor): tf.Tensor {
    return sample.clone();
  }

  step(modelOutput: tf.Tensor, timestep: number, sample: tf.Tensor): SchedulerOutput {
    if (this.nSteps === null) throw notReady(this.className);
    checkStepInputs(this.className, modelOutput, sample, timestep);
    const T = this.config.numTrainTimesteps;
    const ratio = Math.floor(T / this.nSteps);

    // 1. timesteps of this call and the history update
    let t = timestep;
    let prevT = t - ratio;
    if (this.counter === 1) {
      prevT = t;
      t = t + ratio;
    }
    if (t < 0 || t >= T) {
      throw new InputError('PNDMScheduler.step: timestep out of range', { code: 'E_ARGUMENT', field: 'timestep', expected: `[0, ${T - 1 - (this.counter === 1 ? ratio : 0)}]`, found: timestep });
    }
    if (this.counter !== 1) {
      while (this.ets.length > 3) tf.dispose(this.ets.shift()!);
      this.ets.push(tf.keep(modelOutput.clone()));
    }

    const e = this.ets;
    const n = e.length;
    let x = sample;
    let releaseAfter: tf.Tensor | null = null;
    if (n === 1 && this.counter === 0) {
      this.curSample = tf.keep(sample.clone());
    } else if (n === 1 && this.counter === 1) {
      if (this.curSample === null) throw new InputError('PNDMScheduler: missing warm-up sample', { code: 'E_STATE', field: 'curSample' });
      x = this.curSample;
      releaseAfter = this.curSample;
      this.curSample = null;
    }

    const prevSample = tf.tidy(() => {
      // 2. linear multistep combination of the history (PNDM eq. 12)
      let m: tf.Tensor;
      if (n === 1 && this.counter === 0) m = modelOutput;
      else if (n === 1 && this.counter === 1) m = tf.div(tf.add(modelOutput, e[n - 1]!), 2);
      else if (n === 2) m = tf.div(tf.sub(tf.mul(3, e[n - 1]!), e[n - 2]!), 2);
      else if (n === 3) m = tf.div(tf.add(tf.sub(tf.mul(23, e[n - 1]!), tf.mul(16, e[n - 2]!)), tf.mul(5, e[n - 3]!)), 12);
      else {
        const s = tf.sub(tf.add(tf.sub(tf.mul(55, e[n - 1]!), tf.mul(59, e[n - 2]!)), tf.mul(37, e[n - 3]!)), tf.mul(9, e[n - 4]!));
        m = tf.mul(f32(1 / 24), s);
      }
      return this.prevSample(x, t, prevT, m);
    });
    if (releaseAfter) tf.dispose(releaseAfter);
    this.counter += 1;
    return { prevSample };
  }

  /** Steps 3–4: v → ε conversion and the transfer part φ (PNDM eq. 9). */
  private prevSample(sample: tf.Tensor, t: number, prevT: number, modelOutput: tf.Tensor): tf.Tensor {
    const alphaProdT = this.alphasCumprod[t]!;
    const alphaProdTPrev = prevT >= 0 ? this.alphasCumprod[prevT]! : this.finalAlphaCumprod;
    const betaProdT = f32(1 - alphaProdT);
    const betaProdTPrev = f32(1 - alphaProdTPrev);
    let eps = modelOutput;
    if (this.config.predictionType === 'v_prediction') {
      eps = tf.add(tf.mul(sqrtF32(alphaProdT), modelOutput), tf.mul(sqrtF32(betaProdT), sample));
    }
    const sampleCoeff = sqrtF32(f32(alphaProdTPrev / alphaProdT));
    const denom = f32(f32(alphaProdT * sqrtF32(betaProdTPrev)) + sqrtF32(f32(f32(alphaProdT * betaProdT) * alphaProdTPrev)));
    return tf.sub(tf.mul(sampleCoeff, sample), tf.div(tf.mul(f32(alphaProdTPrev - alphaProdT), eps), denom));
  }

  /** Forgets the history (keeps the timesteps): the next step is a first step again. */
  reset(): void {
    tf.dispose(this.ets);
    this.ets = [];
    if (this.curSample) tf.dispose(this.curSample);
    this.curSample = null;
    this.counter = 0;
  }

  getState(): SchedulerState {
    return {
      className: this.className,
      numInferenceSteps: this.nSteps,
      counters: { counter: this.counter },
      tensors: { ets: this.ets.map(serializeTensor), curSample: [serializeTensor(this.curSample)] },
    };
  }

  setState(state: SchedulerState): void {
    if (state.className !== this.className) {
      throw new InputError('scheduler state of another class', { code: 'E_STATE', field: 'className', expected: this.className, found: state.className });
    }
    if (state.numInferenceSteps === null) {
      this.reset();
      this.nSteps = null;
      this.schedule = [];
      return;
    }
    this.setTimesteps(state.numInferenceSteps);
    this.counter = state.counters.counter ?? 0;
    this.ets = (state.tensors.ets ?? []).map((s) => deserializeTensor(s)!).filter((x) => x !== null);
    this.curSample = deserializeTensor(state.tensors.curSample?.[0] ?? null);
  }

  dispose(): void {
    this.reset();
  }
}
