/**
 * PNDM sampler (Liu, Ren, Lin & Zhao 2022, "Pseudo Numerical Methods for Diffusion Models on Manifolds",
 * arXiv:2202.09778), as diffusers 0.31 `PNDMScheduler`: F-PNDM (three pseudo Runge–Kutta steps, then PLMS) when
 * `skip_prk_steps` is false (the diffusers default), PLMS only when it is true (Stable Diffusion 2.1's file) — the
 * scheduler APTP's final evaluation uses (25 steps, APTP.md §9). Stateful: steps must be taken in order from the first
 * timestep.
 *
 * Timesteps (ascending grid g_0 < … < g_{N−1} from `timestep_spacing`, r = T // N, h = r // 2):
 *   PLMS only: g_{N−1}, g_{N−2}, g_{N−2}, g_{N−3}, …, g_0 (the second one repeated; N + 1 entries).
 *   F-PNDM: 12 PRK entries over the 4 largest grid points d > c > b > a:
 *     d, c+h, c+h, c, c, b+h, b+h, b, b, a+h, a+h, a; then the PLMS entries g_{N−4}, …, g_0 (N + 9 entries).
 *
 * PRK call k (k = 0 … 11; the 4 calls of one Runge–Kutta step from t = prk[4⌊k/4⌋], PNDM eq. 13):
 *   prev_t = timestep − h for even k, = timestep for odd k; the base sample is the one passed at k ≡ 0 (mod 4);
 *   k ≡ 0: e_1 is remembered (history `ets`), output e_1;  k ≡ 1, 2: output e_2, e_3;
 *   k ≡ 3: output (e_1 + 2e_2 + 2e_3 + e_4)/6 (accumulated as diffusers: 1/6, +1/3, +1/3, +1/6).
 *   Each output goes through steps 3–4 below with (t, prev_t) on the base sample.
 *
 * PLMS call (counter c = number of previous calls, history `ets` of raw model outputs e):
 *   1. prev_t = t − r. If c ≠ 1: keep the last 3 outputs and append e_t. If c = 1 (PLMS only: the step from the first
 *      timestep is recomputed, crowsonkb's PLMS warm-up): do not append, and use prev_t = t, t = t + r.
 *   2. Linear multistep combination ε' (PNDM eq. 12, Adams–Bashforth):
 *        c = 0: e_t (the sample is remembered);  c = 1: (e_t + e_{−1})/2 on the remembered sample (2nd-order warm-up);
 *        2 outputs: (3e_{−1} − e_{−2})/2;  3: (23e_{−1} − 16e_{−2} + 5e_{−3})/12;
 *        4: (55e_{−1} − 59e_{−2} + 37e_{−3} − 9e_{−4})/24.
 *   3. v-prediction: ε' ← √ᾱ_t·ε' + √(1−ᾱ_t)·x_t (Salimans & Ho 2022; applied after the combination, as diffusers).
 *   4. Transfer part φ (PNDM eq. 9, with x_t added to both sides):
 *        x_{t−δ} = √(ᾱ_{t−δ}/ᾱ_t)·x_t − (ᾱ_{t−δ} − ᾱ_t)·ε' / (ᾱ_t·√(1−ᾱ_{t−δ}) + √(ᾱ_t(1−ᾱ_t)ᾱ_{t−δ}))
 *      with ᾱ below t = 0 equal to 1 (`set_alpha_to_one`) or ᾱ_0 (SD 2.1). In a PRK call x_t is the base sample and t
 *      the Runge–Kutta step's start for all four outputs (diffusers, also for v-prediction).
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

/** F-PNDM's number of pseudo Runge–Kutta steps before PLMS (diffusers `pndm_order`). */
const PNDM_ORDER = 4;

export class PNDMScheduler implements Scheduler {
  readonly className = 'PNDMScheduler' as const;
  readonly config: Readonly<SchedulerConfig>;
  readonly betas: Float32Array;
  readonly alphasCumprod: Float32Array;
  readonly finalAlphaCumprod: number;
  readonly initNoiseSigma = 1;
  private nSteps: number | null = null;
  private schedule: number[] = [];
  /** F-PNDM's leading PRK timesteps (empty with `skip_prk_steps`). */
  private prkTimesteps: number[] = [];
  /** Number of `step` calls since `setTimesteps`. */
  private counter = 0;
  /** Up to 4 raw model outputs, oldest first (kept clones). */
  private ets: tf.Tensor[] = [];
  /** The sample passed at c = 0, reused at c = 1; in PRK, the base sample of the current Runge–Kutta step (kept clone). */
  private curSample: tf.Tensor | null = null;
  /** PRK: the running (e_1 + 2e_2 + 2e_3)/6 of the current Runge–Kutta step (kept). */
  private curModelOutput: tf.Tensor | null = null;

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

  /**
   * PLMS only: N + 1 timesteps, the second one repeated (the PLMS warm-up recomputes the first step).
   * F-PNDM (`skip_prk_steps` false): the 12 PRK timesteps, then N − 3 PLMS timesteps (N + 9 model calls).
   */
  get timesteps(): readonly number[] {
    return this.schedule;
  }

  /** Number of leading pseudo Runge–Kutta calls in `timesteps` (0 with `skip_prk_steps`). */
  get prkSteps(): number {
    return this.prkTimesteps.length;
  }

  setTimesteps(numInferenceSteps: number): void {
    checkNumInferenceSteps(this.className, numInferenceSteps, this.config.numTrainTimesteps);
    const n = numInferenceSteps;
    const asc = spacedTimesteps(this.config, n).reverse();
    if (this.config.skipPrkSteps) {
      // plms_timesteps = concat(ts[:-1], ts[-2:-1], ts[-1:]) reversed
      const plms = n >= 2 ? [...asc.slice(0, -1), asc[asc.length - 2]!, asc[asc.length - 1]!] : [...asc];
      this.prkTimesteps = [];
      this.schedule = plms.reverse();
    } else {
      if (n < 2) {
        // diffusers builds an empty schedule here (no model call at all): refuse instead of returning the noise.
        throw new InputError('PNDMScheduler.setTimesteps: the Runge–Kutta warm-up needs at least 2 inference steps', {
          code: 'E_ARGUMENT', field: 'numInferenceSteps', expected: '>= 2 (or skip_prk_steps: true)', found: n,
        });
      }
      // prk = ts[-4:].repeat(2) + tile([0, h], 4); prk = prk[:-1].repeat(2)[1:-1] reversed; plms = ts[:-3] reversed
      const h = Math.floor(Math.floor(this.config.numTrainTimesteps / n) / 2);
      const pairs = asc.slice(-PNDM_ORDER).flatMap((v) => [v, v + h]).slice(0, -1);
      this.prkTimesteps = pairs.flatMap((v) => [v, v]).slice(1, -1).reverse();
      this.schedule = [...this.prkTimesteps, ...asc.slice(0, Math.max(0, asc.length - 3)).reverse()];
    }
    this.nSteps = n;
    this.reset();
  }

  scaleModelInput(sample: tf.Tensor): tf.Tensor {
    return sample.clone();
  }

  step(modelOutput: tf.Tensor, timestep: number, sample: tf.Tensor): SchedulerOutput {
    if (this.nSteps === null) throw notReady(this.className);
    checkStepInputs(this.className, modelOutput, sample, timestep);
    if (this.counter < this.prkTimesteps.length) return this.stepPrk(modelOutput, timestep, sample);
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

  /** One call of a pseudo Runge–Kutta step (PNDM eq. 13; diffusers `step_prk`). */
  private stepPrk(modelOutput: tf.Tensor, timestep: number, sample: tf.Tensor): SchedulerOutput {
    const T = this.config.numTrainTimesteps;
    const k = this.counter;
    const h = Math.floor(Math.floor(T / this.nSteps!) / 2);
    const prevT = k % 2 === 1 ? timestep : timestep - h;
    const t = this.prkTimesteps[k - (k % 4)]!;
    if (timestep < 0 || timestep >= T) {
      throw new InputError('PNDMScheduler.step: timestep out of range', { code: 'E_ARGUMENT', field: 'timestep', expected: `[0, ${T - 1}]`, found: timestep });
    }
    const phase = k % 4;
    if (phase === 0) {
      this.ets.push(tf.keep(modelOutput.clone()));
      if (this.curSample) tf.dispose(this.curSample);
      this.curSample = tf.keep(sample.clone());
    }
    const base = this.curSample ?? sample;
    const prevSample = tf.tidy(() => {
      let m = modelOutput;
      if (phase < 3) {
        const acc = tf.mul(f32(phase === 0 ? 1 / 6 : 1 / 3), modelOutput);
        const next = this.curModelOutput === null ? acc : tf.add(this.curModelOutput, acc);
        if (this.curModelOutput) tf.dispose(this.curModelOutput);
        this.curModelOutput = tf.keep(next);
      } else {
        if (this.curModelOutput === null) throw new InputError('PNDMScheduler: missing Runge–Kutta history', { code: 'E_STATE', field: 'curModelOutput' });
        m = tf.add(this.curModelOutput, tf.mul(f32(1 / 6), modelOutput));
      }
      return this.prevSample(base, t, prevT, m);
    });
    if (phase === 3 && this.curModelOutput) {
      tf.dispose(this.curModelOutput);
      this.curModelOutput = null;
    }
    this.counter += 1;
    if (this.counter === this.prkTimesteps.length && this.curSample) {
      // no longer read (PLMS after PRK never uses it); released so the live history is ets only
      tf.dispose(this.curSample);
      this.curSample = null;
    }
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
    if (this.curModelOutput) tf.dispose(this.curModelOutput);
    this.curModelOutput = null;
    this.counter = 0;
  }

  getState(): SchedulerState {
    return {
      className: this.className,
      numInferenceSteps: this.nSteps,
      counters: { counter: this.counter },
      tensors: {
        ets: this.ets.map(serializeTensor), curSample: [serializeTensor(this.curSample)], curModelOutput: [serializeTensor(this.curModelOutput)],
      },
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
    this.curModelOutput = deserializeTensor(state.tensors.curModelOutput?.[0] ?? null);
  }

  dispose(): void {
    this.reset();
  }
}
