import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, HostTensor, InputError, ShapeError } from '@aptp/core';
import { clipGradNorm } from './clipGradNorm';
import type { LrSchedule } from './lrSchedule';

/**
 * AdamW with `torch.optim.AdamW` semantics (amsgrad off), the optimizer of every APTP stage (APTP.md §1.3, §1.5):
 *
 * 1. θ ← θ − lr·λ·θ                                  (decoupled weight decay)
 * 2. m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·g²
 * 3. θ ← θ − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)
 *
 * `t` counts the steps of each parameter (torch `state[p]['step']`). A parameter without a gradient in a step (absent
 * or null in `grads`, as torch's `grad is None`) is skipped entirely: no decay, no moment update, its `t` unchanged.
 * Parameters live in named groups with their own lr (reference: `hypernet` 2e-4, `quantizer` 2e-4); a schedule
 * multiplies every group's lr by `schedule(k)` where k = optimizer steps taken so far.
 */
export interface ParamGroup {
  /** Group name, e.g. `hypernet`, `quantizer`, `unet`. */
  name: string;
  /** Base learning rate (already √batch-scaled if `scale_lr`). */
  lr: number;
  /** Decoupled weight decay λ; defaults to the optimizer's. */
  weightDecay?: number;
  /** Trainable tensors by name (names are unique across groups; they key gradients, moments and checkpoints). */
  params: Record<string, tf.Variable>;
}

export interface AdamWOptions {
  /** (β1, β2); torch default (0.9, 0.999). */
  betas?: [number, number];
  /** torch default 1e-8. */
  eps?: number;
  /** Default λ for groups that set none; torch default 1e-2 (the APTP configs use 0, see `optimizerConfigSchema`). */
  weightDecay?: number;
  /** lr multiplier per completed step (default constant 1). */
  schedule?: LrSchedule;
  /** Clip the total gradient 2-norm to this value before the update (`max_grad_norm`); null/undefined = no clipping. */
  maxGradNorm?: number | null;
}

/** Optimizer state in host memory (checkpoints): step counters in JSON, moments as tensors. */
export interface AdamWState {
  /** Optimizer steps taken (drives the lr schedule). */
  step: number;
  /** torch `state[p]['step']` per parameter; a parameter that never had a gradient is absent. */
  paramSteps: Record<string, number>;
  /** `<param>.exp_avg` and `<param>.exp_avg_sq` (torch names), float32. */
  moments: Record<string, HostTensor>;
}

export interface AdamWStepInfo {
  /** Optimizer steps taken, including this one. */
  step: number;
  /** The lr each group used in this step. */
  lrs: Record<string, number>;
  /** Total gradient norm before clipping (only when clipping is on). */
  gradNorm?: number;
}

interface Slot {
  group: ParamGroup;
  param: tf.Variable;
  expAvg: tf.Tensor | null;
  expAvgSq: tf.Tensor | null;
  step: number;
}

export class AdamW {
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly maxGradNorm: number | null;
  private readonly groups: ParamGroup[];
  private readonly schedule: LrSchedule;
  private readonly slots = new Map<string, Slot>();
  private steps = 0;
  private disposed = false;
  /** What the last `step` did (lrs, gradient norm), for metrics. */
  lastStep: AdamWStepInfo | null = null;

  constructor(groups: ParamGroup[], options: AdamWOptions = {}) {
    const [beta1, beta2] = options.betas ?? [0.9, 0.999];
    for (const [field, b] of [['adamBeta1', beta1], ['adamBeta2', beta2]] as const) {
      if (!(b >= 0 && b < 1)) throw new ConfigError('Adam beta must be in [0, 1)', { field, found: b });
    }
    const eps = options.eps ?? 1e-8;
    if (!(eps >= 0)) throw new ConfigError('Adam epsilon must be >= 0', { field: 'adamEpsilon', found: eps });
    const maxGradNorm = options.maxGradNorm ?? null;
    if (maxGradNorm !== null && !(maxGradNorm > 0)) throw new ConfigError('max grad norm must be positive or null', { field: 'maxGradNorm', found: maxGradNorm });
    this.beta1 = beta1;
    this.beta2 = beta2;
    this.eps = eps;
    this.maxGradNorm = maxGradNorm;
    this.schedule = options.schedule ?? (() => 1);
    const defaultDecay = options.weightDecay ?? 1e-2;
    const groupNames = new Set<string>();
    this.groups = groups.map((g) => {
      if (groupNames.has(g.name)) throw new ConfigError('duplicate parameter group', { field: 'groups', found: g.name });
      groupNames.add(g.name);
      if (!(g.lr >= 0 && Number.isFinite(g.lr))) throw new ConfigError('learning rate must be finite and >= 0', { field: `${g.name}.lr`, found: g.lr });
      const weightDecay = g.weightDecay ?? defaultDecay;
      if (!(weightDecay >= 0)) throw new ConfigError('weight decay must be >= 0', { field: `${g.name}.weightDecay`, found: weightDecay });
      return { ...g, weightDecay };
    });
    for (const group of this.groups) {
      for (const [name, param] of Object.entries(group.params)) {
        if (this.slots.has(name)) throw new ConfigError('parameter name used twice', { field: name, found: `${this.slots.get(name)!.group.name} and ${group.name}` });
        if (param.dtype !== 'float32') throw new ConfigError('parameters must be float32', { field: name, found: param.dtype });
        this.slots.set(name, { group, param, expAvg: null, expAvgSq: null, step: 0 });
      }
    }
  }

  /** Optimizer steps taken so far. */
  get stepCount(): number {
    return this.steps;
  }

  /** Parameter names, in group order. */
  paramNames(): string[] {
    return [...this.slots.keys()];
  }

  /** Named parameters of all groups (the weights a checkpoint stores). */
  params(): Record<string, tf.Variable> {
    const out: Record<string, tf.Variable> = {};
    for (const [name, s] of this.slots) out[name] = s.param;
    return out;
  }

  /** The lr each group will use in the next step. */
  lrs(): Record<string, number> {
    const mult = this.schedule(this.steps);
    return Object.fromEntries(this.groups.map((g) => [g.name, g.lr * mult]));
  }

  /**
   * One update from gradients keyed by parameter name. Gradients are not disposed (the caller owns them).
   * Throws InputError for an unknown name and ShapeError for a gradient whose shape differs from its parameter.
   */
  step(grads: Record<string, tf.Tensor | null | undefined>): AdamWStepInfo {
    this.live();
    const present: Record<string, tf.Tensor> = {};
    for (const [name, g] of Object.entries(grads)) {
      if (g === null || g === undefined) continue;
      const slot = this.slots.get(name);
      if (!slot) throw new InputError('gradient for an unknown parameter', { field: name, expected: this.paramNames().slice(0, 8).join(', ') + (this.slots.size > 8 ? ', ...' : '') });
      if (!tf.util.arraysEqual(g.shape, slot.param.shape)) throw new ShapeError('gradient shape differs from its parameter', { field: name, expected: slot.param.shape, found: g.shape });
      present[name] = g;
    }
    let gradNorm: number | undefined;
    let clipped: Record<string, tf.Tensor> | null = null;
    if (this.maxGradNorm !== null) {
      const r = clipGradNorm(present, this.maxGradNorm);
      gradNorm = r.totalNorm.dataSync()[0]!;
      r.totalNorm.dispose();
      clipped = r.grads;
    }
    const use = clipped ?? present;
    const mult = this.schedule(this.steps);
    const lrs = Object.fromEntries(this.groups.map((g) => [g.name, g.lr * mult]));
    const stale: tf.Tensor[] = [];
    try {
      tf.tidy(() => {
        for (const [name, g] of Object.entries(use)) {
          const slot = this.slots.get(name)!;
          const lr = lrs[slot.group.name]!;
          const t = slot.step + 1;
          const m0 = slot.expAvg ?? tf.zerosLike(slot.param);
          const v0 = slot.expAvgSq ?? tf.zerosLike(slot.param);
          // 2. moments (torch: exp_avg.lerp_(g, 1 − β1); exp_avg_sq.mul_(β2).addcmul_(g, g, 1 − β2))
          const m = tf.add(m0, tf.mul(tf.sub(g, m0), 1 - this.beta1));
          const v = tf.add(tf.mul(v0, this.beta2), tf.mul(tf.square(g), 1 - this.beta2));
          // 3. bias-corrected step
          const stepSize = lr / (1 - this.beta1 ** t);
          const bc2Sqrt = Math.sqrt(1 - this.beta2 ** t);
          const denom = tf.add(tf.div(tf.sqrt(v), bc2Sqrt), this.eps);
          // 1. decoupled decay applies to θ before the Adam step
          const decay = lr * slot.group.weightDecay!;
          const decayed = decay !== 0 ? tf.mul(slot.param, 1 - decay) : slot.param;
          slot.param.assign(tf.sub(decayed, tf.mul(tf.div(m, denom), stepSize)));
          if (slot.expAvg) stale.push(slot.expAvg, slot.expAvgSq!);
          slot.expAvg = tf.keep(m);
          slot.expAvgSq = tf.keep(v);
          slot.step = t;
        }
      });
    } finally {
      tf.dispose(stale);
      if (clipped) tf.dispose(clipped);
    }
    this.steps += 1;
    this.lastStep = { step: this.steps, lrs, ...(gradNorm !== undefined ? { gradNorm } : {}) };
    return this.lastStep;
  }

  /** Host copy of the state (moments are read from the backend: call at a step boundary). */
  getState(): AdamWState {
    this.live();
    const paramSteps: Record<string, number> = {};
    const moments: Record<string, HostTensor> = {};
    for (const [name, s] of this.slots) {
      if (s.step === 0 || !s.expAvg || !s.expAvgSq) continue;
      paramSteps[name] = s.step;
      moments[`${name}.exp_avg`] = { dtype: 'float32', shape: [...s.expAvg.shape], data: Float32Array.from(s.expAvg.dataSync() as Float32Array) };
      moments[`${name}.exp_avg_sq`] = { dtype: 'float32', shape: [...s.expAvgSq.shape], data: Float32Array.from(s.expAvgSq.dataSync() as Float32Array) };
    }
    return { step: this.steps, paramSteps, moments };
  }

  /**
   * Replaces the state (moments, step counters) with a saved one. Validates everything before changing anything;
   * errors name `file` (if given) and the offending field.
   */
  setState(state: AdamWState, file?: string): void {
    this.live();
    if (!(Number.isInteger(state.step) && state.step >= 0)) throw new InputError('optimizer step must be a non-negative integer', { file, field: 'optimizer.step', found: state.step });
    const known = new Set<string>();
    for (const [name, t] of Object.entries(state.paramSteps)) {
      const slot = this.slots.get(name);
      if (!slot) throw new InputError('optimizer state for an unknown parameter', { file, field: `optimizer.paramSteps.${name}` });
      if (!(Number.isInteger(t) && t > 0)) throw new InputError('parameter step must be a positive integer', { file, field: `optimizer.paramSteps.${name}`, found: t });
      for (const key of [`${name}.exp_avg`, `${name}.exp_avg_sq`]) {
        const m = state.moments[key];
        if (!m) throw new InputError('missing optimizer moment', { file, field: key });
        if (!tf.util.arraysEqual(m.shape, slot.param.shape)) throw new ShapeError('optimizer moment shape differs from its parameter', { file, field: key, expected: slot.param.shape, found: m.shape });
        if (m.dtype !== 'float32' && m.dtype !== 'float64') throw new InputError('optimizer moment must be floating point', { file, field: key, found: m.dtype });
        known.add(key);
      }
    }
    for (const key of Object.keys(state.moments)) {
      if (!known.has(key)) throw new InputError('optimizer moment without a parameter step', { file, field: key });
    }
    for (const [name, slot] of this.slots) {
      tf.dispose([slot.expAvg, slot.expAvgSq].filter((t): t is tf.Tensor => t !== null));
      const t = state.paramSteps[name];
      if (t === undefined) {
        slot.expAvg = slot.expAvgSq = null;
        slot.step = 0;
        continue;
      }
      const m = state.moments[`${name}.exp_avg`]!;
      const v = state.moments[`${name}.exp_avg_sq`]!;
      slot.expAvg = tf.tensor(Float32Array.from(m.data as Float32Array), m.shape, 'float32');
      slot.expAvgSq = tf.tensor(Float32Array.from(v.data as Float32Array), v.shape, 'float32');
      slot.step = t;
    }
    this.steps = state.step;
    this.lastStep = null;
  }

  /** Frees the moments (not the parameters, which the caller owns). Idempotent. */
  dispose(): void {
    if (this.disposed) return;
    for (const slot of this.slots.values()) {
      tf.dispose([slot.expAvg, slot.expAvgSq].filter((t): t is tf.Tensor => t !== null));
      slot.expAvg = slot.expAvgSq = null;
    }
    this.disposed = true;
  }

  private live(): void {
    if (this.disposed) throw new InputError('optimizer is disposed', { code: 'E_DISPOSED', field: 'AdamW' });
  }
}

/**
 * `tf.variableGrads` keyed by our parameter names: the loss value and one gradient per parameter the loss depends on
 * (parameters it does not reach are absent, so `AdamW.step` skips them like torch skips `grad is None`).
 * The caller owns `value` and the gradients.
 */
export function namedGrads(f: () => tf.Scalar, params: Record<string, tf.Variable>): { value: tf.Scalar; grads: Record<string, tf.Tensor> } {
  const entries = Object.entries(params);
  const byVarName = new Map(entries.map(([name, v]) => [v.name, name]));
  const { value, grads } = tf.variableGrads(f, entries.map(([, v]) => v));
  const out: Record<string, tf.Tensor> = {};
  for (const [varName, g] of Object.entries(grads)) out[byVarName.get(varName)!] = g;
  return { value, grads: out };
}
