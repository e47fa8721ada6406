/**
 * What every sampler (DDIM, PNDM, DPM-Solver++) offers the sampling loop, plus the small NumPy-compatible helpers
 * their `setTimesteps` need to reproduce diffusers' integer timestep lists exactly.
 *
 * Contract (one conformance suite tests it for every sampler):
 * - `setTimesteps(n)` before `step`; `step` before it throws `InputError` (code `E_SCHEDULER_NOT_READY`).
 * - `step(modelOutput, timestep, sample)` takes `[B, C, H, W]` (any shape) float32 tensors and returns new tensors
 *   the caller owns; it never disposes its inputs and leaves no other tensors behind, except the history a multistep
 *   sampler keeps (clones, released by `setTimesteps`, `reset`, `setState` and `dispose`).
 * - All coefficients are per step (one timestep for the whole batch), so batch items never interact.
 * - `getState()` is plain JSON (tensor history as numbers); `setState()` restores it, so a chain can be resumed.
 */
import * as tf from '@tensorflow/tfjs-core';
import { InputError } from '../errors';
import type { SchedulerClassName, SchedulerConfig } from './schedulerConfig';

export interface SchedulerStepOptions {
  /** DDIM only: η of Song et al. 2021, eq. 16 (0 = deterministic DDIM, 1 = DDPM-like). */
  eta?: number;
  /** DDIM with η > 0: the standard-normal noise z of eq. 12, same shape as `sample`. Required then (noise is injected, never drawn here). */
  varianceNoise?: tf.Tensor;
  /** DDIM: re-derive ε from the clipped x0 (diffusers `use_clipped_model_output`). */
  useClippedModelOutput?: boolean;
  /** Also return the predicted x0 (DDIM, DPM-Solver). */
  returnPredOriginalSample?: boolean;
}

export interface SchedulerOutput {
  /** x_{t−1} (the sample at the next timestep of the schedule). Caller owns it. */
  prevSample: tf.Tensor;
  /** x̂0, when requested with `returnPredOriginalSample` and the sampler computes one. Caller owns it. */
  predOriginalSample?: tf.Tensor;
}

export interface SerializedTensor {
  shape: number[];
  data: number[];
}

/** JSON-serialisable sampler state (`JSON.stringify`/`parse` round-trips it exactly). */
export interface SchedulerState {
  className: SchedulerClassName;
  numInferenceSteps: number | null;
  counters: Record<string, number | null>;
  tensors: Record<string, (SerializedTensor | null)[]>;
}

export interface Scheduler {
  readonly className: SchedulerClassName;
  readonly config: Readonly<SchedulerConfig>;
  /** β_t, float32 `[numTrainTimesteps]`. */
  readonly betas: Float32Array;
  /** ᾱ_t, float32 `[numTrainTimesteps]`. */
  readonly alphasCumprod: Float32Array;
  /** Standard deviation of the initial noise x_T (1 for these samplers). */
  readonly initNoiseSigma: number;
  readonly numInferenceSteps: number | null;
  /** Timesteps in order of use; empty before `setTimesteps`. */
  readonly timesteps: readonly number[];
  /** Computes the inference timesteps and resets the sampler's history. */
  setTimesteps(numInferenceSteps: number): void;
  /** Input scaling before the model (identity for DDIM, PNDM and DPM-Solver; kept for the sampler loop). */
  scaleModelInput(sample: tf.Tensor, timestep: number): tf.Tensor;
  step(modelOutput: tf.Tensor, timestep: number, sample: tf.Tensor, options?: SchedulerStepOptions): SchedulerOutput;
  /** Forgets the history of a multistep sampler (keeps the timesteps). */
  reset(): void;
  getState(): SchedulerState;
  setState(state: SchedulerState): void;
  /** Releases the kept history tensors; idempotent. */
  dispose(): void;
}

// ---------------------------------------------------------------------------------------------------------------
// helpers shared by the samplers

export function notReady(className: SchedulerClassName): InputError {
  return new InputError(`${className}.step called before setTimesteps`, {
    code: 'E_SCHEDULER_NOT_READY',
    field: 'numInferenceSteps',
    expected: 'call setTimesteps(numInferenceSteps) first',
    found: null,
  });
}

export function checkNumInferenceSteps(className: SchedulerClassName, n: number, numTrainTimesteps: number): void {
  if (!Number.isInteger(n) || n < 1 || n > numTrainTimesteps) {
    throw new InputError(`${className}.setTimesteps: invalid number of inference steps`, {
      code: 'E_ARGUMENT',
      field: 'numInferenceSteps',
      expected: `an integer in [1, ${numTrainTimesteps}] (num_train_timesteps)`,
      found: n,
    });
  }
}

export function checkStepInputs(className: SchedulerClassName, modelOutput: tf.Tensor, sample: tf.Tensor, timestep: number): void {
  if (modelOutput.shape.length !== sample.shape.length || modelOutput.shape.some((d, i) => d !== sample.shape[i])) {
    throw new InputError(`${className}.step: model_output and sample shapes differ`, {
      code: 'E_SHAPE', field: 'modelOutput', expected: sample.shape, found: modelOutput.shape,
    });
  }
  if (!Number.isInteger(timestep)) {
    throw new InputError(`${className}.step: timestep must be an integer`, { code: 'E_ARGUMENT', field: 'timestep', found: timestep });
  }
}

/** NumPy's `round` (round half to even). */
/**
 * Inference timesteps in descending order, as DDIM and PNDM space them (Lin et al. 2023, Table 2): `leading`
 * (N−1)·r … r, 0 plus `steps_offset` with r = T // N; `linspace` round(linspace(0, T−1, N)) reversed; `trailing`
 * round(arange(T, 0, −T/N)) − 1.
 */
export function spacedTimesteps(config: Pick<SchedulerConfig, 'numTrainTimesteps' | 'timestepSpacing' | 'stepsOffset'>, n: number): number[] {
  const T = config.numTrainTimesteps;
  if (config.timestepSpacing === 'linspace') return npLinspace(0, T - 1, n).map(roundHalfEven).reverse();
  if (config.timestepSpacing === 'leading') {
    const ratio = Math.floor(T / n);
    return Array.from({ length: n }, (_, i) => (n - 1 - i) * ratio + config.stepsOffset);
  }
  return npArange(T, 0, -T / n).map((v) => roundHalfEven(v) - 1);
}

export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** `np.linspace(start, stop, num)` in float64 (`i·step + start`, last value = stop). */
export function npLinspace(start: number, stop: number, num: number): number[] {
  if (num === 1) return [start];
  const step = (stop - start) / (num - 1);
  const out = Array.from({ length: num }, (_, i) => i * step + start);
  out[num - 1] = stop;
  return out;
}

/** `np.arange(start, stop, step)` for floats (x0 = start, x1 = start + step, then `start + i·(x1 − x0)`: NumPy's fill rule). */
export function npArange(start: number, stop: number, step: number): number[] {
  const length = Math.max(0, Math.ceil((stop - start) / step));
  const second = start + step;
  const delta = second - start;
  return Array.from({ length }, (_, i) => (i === 0 ? start : i === 1 ? second : start + i * delta));
}

export function serializeTensor(t: tf.Tensor | null): SerializedTensor | null {
  return t === null ? null : { shape: [...t.shape], data: Array.from(t.dataSync()) };
}

export function deserializeTensor(s: SerializedTensor | null): tf.Tensor | null {
  return s === null ? null : tf.keep(tf.tensor(s.data, s.shape, 'float32'));
}

/** √x of a float32 value, rounded to float32 (torch float32 `** 0.5`). */
export function sqrtF32(x: number): number {
  return Math.fround(Math.sqrt(x));
}
