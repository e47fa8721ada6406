/**
 * Multistep DPM-Solver++ (Lu, Zhou, Bao, Chen, Li & Zhu 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
 * Diffusion Probabilistic Models", arXiv:2211.01095), as diffusers 0.31 `DPMSolverMultistepScheduler`; the SD 2.1
 * setting is the 2M solver (`solver_order` 2, midpoint, `lower_order_final`, final σ = 0). Also the original
 * DPM-Solver (`algorithm_type` "dpmsolver", arXiv:2206.00927), Heun-type second order and third order.
 *
 * Notation: for each inference timestep t_i, σ_i = √((1−ᾱ)/ᾱ) (then a final σ_N = 0 or σ_min),
 *   α_i = 1/√(σ_i² + 1),  s_i = σ_i·α_i  (the VP α_t, σ_t),  λ_i = ln α_i − ln s_i  (half log-SNR),
 *   h_i = λ_{i+1} − λ_i.
 * Per step i, with x0_i the data prediction (v: x0 = α_i·x − s_i·v; ε: x0 = (x − s_i·ε)/α_i):
 *   first order (DDIM-equivalent), DPM-Solver++ eq. (9 with k = 1):
 *     x_{i+1} = (s_{i+1}/s_i)·x − α_{i+1}(e^{−h} − 1)·x0_i
 *   second order multistep, Algorithm 2 ("2M"): r0 = h_{i−1}/h_i, D1 = (x0_i − x0_{i−1})/r0,
 *     midpoint: x_{i+1} = (s_{i+1}/s_i)·x − α_{i+1}(e^{−h} − 1)·x0_i − ½·α_{i+1}(e^{−h} − 1)·D1
 *     heun:     x_{i+1} = (s_{i+1}/s_i)·x − α_{i+1}(e^{−h} − 1)·x0_i + α_{i+1}((e^{−h} − 1)/h + 1)·D1
 *   third order multistep (DPM-Solver eq. / Algorithm of arXiv:2206.00927 App. B).
 * Step 0 is first order (no history); the last step is first order when σ_N = 0 (it returns x0) or with
 * `lower_order_final` and fewer than 15 steps. Stateful: steps run in order from the first timestep.
 */
import * as tf from '@tensorflow/tfjs-core';
import { InputError } from '../errors';
import { trainSchedule } from './betas';
import {
  Scheduler, SchedulerOutput, SchedulerState, SchedulerStepOptions,
  checkNumInferenceSteps, checkStepInputs, deserializeTensor, notReady, npArange, npLinspace, roundHalfEven, serializeTensor, sqrtF32,
} from './scheduler';
import { resolveSchedulerConfig, schedulerConfigFromJson, type ResolveOptions, type SchedulerConfig } from './schedulerConfig';

const f32 = Math.fround;

/** α, s and λ of a σ (float32, as diffusers' `_sigma_to_alpha_sigma_t` on float32 tensors). */
function alphaSigma(sigma: number): { alpha: number; s: number; lambda: number } {
  const alpha = f32(1 / sqrtF32(f32(f32(sigma * sigma) + 1)));
  const s = f32(sigma * alpha);
  return { alpha, s, lambda: f32(f32(Math.log(alpha)) - f32(Math.log(s))) };
}

export class DPMSolverMultistepScheduler implements Scheduler {
  readonly className = 'DPMSolverMultistepScheduler' as const;
  readonly config: Readonly<SchedulerConfig>;
  readonly betas: Float32Array;
  readonly alphasCumprod: Float32Array;
  readonly initNoiseSigma = 1;
  /** λ_t = ln √ᾱ_t − ln √(1−ᾱ_t) per training timestep (float32); used by `lambda_min_clipped`. */
  private readonly lambdaT: Float32Array;
  /** σ_t = √((1−ᾱ_t)/ᾱ_t) per training timestep (float32). */
  private readonly sigmaTable: Float32Array;
  private nSteps: number | null = null;
  /** The `numInferenceSteps` asked for (trailing spacing with λ clipping may give fewer timesteps). */
  private requested: number | null = null;
  private schedule: number[] = [];
  private sigmaList = new Float32Array(0);
  private stepIndex: number | null = null;
  private lowerOrderNums = 0;
  /** The last `solverOrder` data (or noise) predictions, oldest first (kept tensors). */
  private modelOutputs: (tf.Tensor | null)[];

  constructor(config: Partial<SchedulerConfig> = {}, options: ResolveOptions = {}) {
    this.config = Object.freeze(resolveSchedulerConfig('DPMSolverMultistepScheduler', config, options));
    const s = trainSchedule(this.config);
    this.betas = s.betas;
    this.alphasCumprod = s.alphasCumprod;
    // Zero terminal SNR would make σ_T infinite: diffusers sets ᾱ_T to the smallest fp16 subnormal instead.
    if (this.config.rescaleBetasZeroSnr) this.alphasCumprod[this.alphasCumprod.length - 1] = 2 ** -24;
    this.lambdaT = this.alphasCumprod.map((a) => f32(f32(Math.log(sqrtF32(a))) - f32(Math.log(sqrtF32(f32(1 - a))))));
    this.sigmaTable = this.alphasCumprod.map((a) => sqrtF32(f32(f32(1 - a) / a)));
    this.modelOutputs = new Array<tf.Tensor | null>(this.config.solverOrder).fill(null);
  }

  static fromJson(raw: unknown, options: ResolveOptions = {}): DPMSolverMultistepScheduler {
    return new DPMSolverMultistepScheduler(schedulerConfigFromJson('DPMSolverMultistepScheduler', raw, options), options);
  }

  get numInferenceSteps(): number | null {
    return this.nSteps;
  }

  get timesteps(): readonly number[] {
    return this.schedule;
  }

  /** σ_0 … σ_N (N + 1 values, float32; the last is 0 or σ_min). Empty before `setTimesteps`. */
  get sigmas(): Float32Array {
    return this.sigmaList.slice();
  }

  setTimesteps(numInferenceSteps: number): void {
    const T = this.config.numTrainTimesteps;
    checkNumInferenceSteps(this.className, numInferenceSteps, T);
    const n = numInferenceSteps;
    // Clip the smallest λ(t) for numerical stability (cosine schedules): drop timesteps with λ < lambda_min_clipped.
    let clippedIdx = 0;
    while (clippedIdx < T && this.lambdaT[T - 1 - clippedIdx]! < this.config.lambdaMinClipped) clippedIdx++;
    const last = T - clippedIdx;
    let t: number[];
    if (this.config.timestepSpacing === 'linspace') {
      t = npLinspace(0, last - 1, n + 1).map(roundHalfEven).reverse().slice(0, n);
    } else if (this.config.timestepSpacing === 'leading') {
      const ratio = Math.floor(last / (n + 1));
      t = Array.from({ length: n }, (_, i) => (n - i) * ratio + this.config.stepsOffset);
    } else {
      t = npArange(last, 0, -T / n).map((v) => roundHalfEven(v) - 1);
    }
    const sigmaLast = this.config.finalSigmasType === 'zero' ? 0 : this.sigmaTable[0]!;
    this.schedule = t;
    this.sigmaList = Float32Array.from([...t.map((ti) => this.sigmaTable[ti]!), sigmaLast]);
    this.nSteps = t.length;
    this.requested = n;
    this.reset();
  }

  scaleModelInput(sample: tf.Tensor): tf.Tensor {
    return sample.clone();
  }

  step(modelOutput: tf.Tensor, timestep: number, sample: tf.Tensor, options: SchedulerStepOptions = {}): SchedulerOutput {
    if (this.nSteps === null) throw notReady(this.className);
    checkStepInputs(this.className, modelOutput, sample, timestep);
    const c = this.config;
    const len = this.schedule.length;
    // The step counter starts at the given timestep's position (the second occurrence if repeated, else the last step).
    const i = this.stepIndex ?? this.indexForTimestep(timestep);
    if (i >= len) {
      throw new InputError('DPMSolverMultistepScheduler.step: every timestep has been stepped', { code: 'E_STATE', field: 'stepIndex', expected: `< ${len}`, found: i });
    }
    const lowerOrderFinal = i === len - 1 && (c.eulerAtFinal || (c.lowerOrderFinal && len < 15) || c.finalSigmasType === 'zero');
    const lowerOrderSecond = i === len - 2 && c.lowerOrderFinal && len < 15;
    const order = c.solverOrder === 1 || this.lowerOrderNums < 1 || lowerOrderFinal ? 1
      : c.solverOrder === 2 || this.lowerOrderNums < 2 || lowerOrderSecond ? 2 : 3;

    const sig = (k: number): ReturnType<typeof alphaSigma> => alphaSigma(this.sigmaList[k]!);
    const cur = sig(i);
    const next = sig(i + 1);

    const result = tf.tidy(() => {
      // 1. convert the model output to the solver's parameterisation (data x0 for ++, noise ε otherwise)
      const converted = tf.keep(this.convertModelOutput(modelOutput, sample, cur));
      const dropped = this.modelOutputs[0];
      for (let k = 0; k < c.solverOrder - 1; k++) this.modelOutputs[k] = this.modelOutputs[k + 1]!;
      this.modelOutputs[c.solverOrder - 1] = converted;
      if (dropped && !this.modelOutputs.includes(dropped)) dropped.dispose();
      const m = this.modelOutputs;
      const m0 = converted;
      // 2. the update of the chosen order
      let prev: tf.Tensor;
      if (order === 1) prev = this.firstOrder(m0, sample, cur, next);
      else if (order === 2) prev = this.secondOrder(m0, m[c.solverOrder - 2]!, sample, sig(i - 1), cur, next);
      else prev = this.thirdOrder(m0, m[c.solverOrder - 2]!, m[c.solverOrder - 3]!, sample, sig(i - 2), sig(i - 1), cur, next);
      if (!options.returnPredOriginalSample) return { prevSample: prev };
      const x0 = c.algorithmType === 'dpmsolver++' ? m0.clone() : tf.div(tf.sub(sample, tf.mul(cur.s, m0)), cur.alpha);
      return { prevSample: prev, predOriginalSample: x0 };
    });
    if (this.lowerOrderNums < c.solverOrder) this.lowerOrderNums += 1;
    this.stepIndex = i + 1;
    return result as SchedulerOutput;
  }

  /** diffusers `index_for_timestep`: position of `timestep` (second match if repeated; last step if absent). */
  private indexForTimestep(timestep: number): number {
    const matches = this.schedule.flatMap((t, k) => (t === timestep ? [k] : []));
    if (matches.length === 0) return this.schedule.length - 1;
    return matches.length > 1 ? matches[1]! : matches[0]!;
  }

  private convertModelOutput(modelOutput: tf.Tensor, sample: tf.Tensor, cur: ReturnType<typeof alphaSigma>): tf.Tensor {
    const { alpha, s } = cur;
    if (this.config.algorithmType === 'dpmsolver++') {
      switch (this.config.predictionType) {
        case 'epsilon': return tf.div(tf.sub(sample, tf.mul(s, modelOutput)), alpha);
        case 'v_prediction': return tf.sub(tf.mul(alpha, sample), tf.mul(s, modelOutput));
        case 'sample': return modelOutput.clone();
      }
    }
    switch (this.config.predictionType) {
      case 'epsilon': return modelOutput.clone();
      case 'v_prediction': return tf.add(tf.mul(alpha, modelOutput), tf.mul(s, sample));
      case 'sample': return tf.div(tf.sub(sample, tf.mul(alpha, modelOutput)), s);
    }
  }

  private firstOrder(m0: tf.Tensor, sample: tf.Tensor, s0: ReturnType<typeof alphaSigma>, t: ReturnType<typeof alphaSigma>): tf.Tensor {
    const h = f32(t.lambda - s0.lambda);
    if (this.config.algorithmType === 'dpmsolver++') {
      return tf.sub(tf.mul(f32(t.s / s0.s), sample), tf.mul(f32(t.alpha * f32(f32(Math.exp(-h)) - 1)), m0));
    }
    return tf.sub(tf.mul(f32(t.alpha / s0.alpha), sample), tf.mul(f32(t.s * f32(f32(Math.exp(h)) - 1)), m0));
  }

  private secondOrder(
    m0: tf.Tensor, m1: tf.Tensor, sample: tf.Tensor,
    s1: ReturnType<typeof alphaSigma>, s0: ReturnType<typeof alphaSigma>, t: ReturnType<typeof alphaSigma>,
  ): tf.Tensor {
    const h = f32(t.lambda - s0.lambda);
    const h0 = f32(s0.lambda - s1.lambda);
    const r0 = f32(h0 / h);
    const d1 = tf.mul(f32(1 / r0), tf.sub(m0, m1));
    if (this.config.algorithmType === 'dpmsolver++') {
      const em1 = f32(f32(Math.exp(-h)) - 1);
      const c0 = f32(t.alpha * em1);
      const base = tf.sub(tf.mul(f32(t.s / s0.s), sample), tf.mul(c0, m0));
      if (this.config.solverType === 'midpoint') return tf.sub(base, tf.mul(f32(0.5 * c0), d1));
      return tf.add(base, tf.mul(f32(t.alpha * f32(f32(em1 / h) + 1)), d1));
    }
    const ep1 = f32(f32(Math.exp(h)) - 1);
    const c0 = f32(t.s * ep1);
    const base = tf.sub(tf.mul(f32(t.alpha / s0.alpha), sample), tf.mul(c0, m0));
    if (this.config.solverType === 'midpoint') return tf.sub(base, tf.mul(f32(0.5 * c0), d1));
    return tf.sub(base, tf.mul(f32(t.s * f32(f32(ep1 / h) - 1)), d1));
  }

  private thirdOrder(
    m0: tf.Tensor, m1: tf.Tensor, m2: tf.Tensor, sample: tf.Tensor,
    s2: ReturnType<typeof alphaSigma>, s1: ReturnType<typeof alphaSigma>, s0: ReturnType<typeof alphaSigma>, t: ReturnType<typeof alphaSigma>,
  ): tf.Tensor {
    const h = f32(t.lambda - s0.lambda);
    const h0 = f32(s0.lambda - s1.lambda);
    const h1 = f32(s1.lambda - s2.lambda);
    const r0 = f32(h0 / h);
    const r1 = f32(h1 / h);
    const d10 = tf.mul(f32(1 / r0), tf.sub(m0, m1));
    const d11 = tf.mul(f32(1 / r1), tf.sub(m1, m2));
    const diff = tf.sub(d10, d11);
    const d1 = tf.add(d10, tf.mul(f32(r0 / f32(r0 + r1)), diff));
    const d2 = tf.mul(f32(1 / f32(r0 + r1)), diff);
    const hh = f32(h * h);
    if (this.config.algorithmType === 'dpmsolver++') {
      const em1 = f32(f32(Math.exp(-h)) - 1);
      return tf.sub(
        tf.add(
          tf.sub(tf.mul(f32(t.s / s0.s), sample), tf.mul(f32(t.alpha * em1), m0)),
          tf.mul(f32(t.alpha * f32(f32(em1 / h) + 1)), d1),
        ),
        tf.mul(f32(t.alpha * f32(f32(f32(em1 + h) / hh) - 0.5)), d2),
      );
    }
    const ep1 = f32(f32(Math.exp(h)) - 1);
    return tf.sub(
      tf.sub(
        tf.sub(tf.mul(f32(t.alpha / s0.alpha), sample), tf.mul(f32(t.s * ep1), m0)),
        tf.mul(f32(t.s * f32(f32(ep1 / h) - 1)), d1),
      ),
      tf.mul(f32(t.s * f32(f32(f32(ep1 - h) / hh) - 0.5)), d2),
    );
  }

  /** Forgets the history and the step counter (keeps the timesteps). */
  reset(): void {
    tf.dispose(this.modelOutputs.filter((m): m is tf.Tensor => m !== null));
    this.modelOutputs = new Array<tf.Tensor | null>(this.config.solverOrder).fill(null);
    this.lowerOrderNums = 0;
    this.stepIndex = null;
  }

  getState(): SchedulerState {
    return {
      className: this.className,
      numInferenceSteps: this.requested,
      counters: { stepIndex: this.stepIndex, lowerOrderNums: this.lowerOrderNums },
      tensors: { modelOutputs: this.modelOutputs.map(serializeTensor) },
    };
  }

  setState(state: SchedulerState): void {
    if (state.className !== this.className) {
      throw new InputError('scheduler state of another class', { code: 'E_STATE', field: 'className', expected: this.className, found: state.className });
    }
    if (state.numInferenceSteps === null) {
      this.reset();
      this.nSteps = null;
      this.requested = null;
      this.schedule = [];
      this.sigmaList = new Float32Array(0);
      return;
    }
    this.setTimesteps(state.numInferenceSteps);
    const saved = state.tensors.modelOutputs ?? [];
    if (saved.length !== this.config.solverOrder) {
      throw new InputError('scheduler state does not match solver_order', { code: 'E_STATE', field: 'modelOutputs', expected: this.config.solverOrder, found: saved.length });
    }
    this.modelOutputs = saved.map(deserializeTensor);
    this.stepIndex = state.counters.stepIndex ?? null;
    this.lowerOrderNums = state.counters.lowerOrderNums ?? 0;
  }

  dispose(): void {
    this.reset();
  }
}
