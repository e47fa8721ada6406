import { ConfigError } from '@aptp/core';

/**
 * Learning-rate schedules as multipliers of a group's base lr, with diffusers' `get_scheduler` semantics
 * (`diffusers/optimization.py`, a torch `LambdaLR`): the optimizer step that follows `k` completed steps uses
 * `lr = baseLr × lrMultiplier(k)`. So with warm-up the very first step (k = 0) has lr 0, as in the reference, where
 * `optimizer.step()` runs before `lr_scheduler.step()`. The reference multiplies its warm-up and total steps by the
 * number of processes (APTP.md §1.3); a single process multiplies by 1.
 */
export const LR_SCHEDULERS = ['constant', 'constant_with_warmup', 'linear', 'cosine', 'piecewise_constant'] as const;
export type LrSchedulerName = (typeof LR_SCHEDULERS)[number];

export interface LrScheduleOptions {
  /** `lr_warmup_steps`: linear ramp 0 → 1 over this many steps (ignored by `constant`, as in diffusers). */
  warmupSteps?: number;
  /** `max_train_steps`: needed by `linear` and `cosine` (they decay to 0 at this step). */
  totalSteps?: number;
  /** Cosine half-waves: diffusers default 0.5 (one decay from 1 to 0). */
  numCycles?: number;
  /**
   * `step_rules` of `piecewise_constant`, diffusers' syntax: `"m1:s1,m2:s2,…,mLast"` = multiplier m1 while fewer than
   * s1 steps are done, then m2 until s2, …, mLast after the last boundary. E.g. `"1:1100,0.35"`.
   */
  stepRules?: string;
}

/** A schedule: completed optimizer steps → lr multiplier. */
export type LrSchedule = (completedSteps: number) => number;

export function lrSchedule(name: LrSchedulerName, options: LrScheduleOptions = {}): LrSchedule {
  const warmup = options.warmupSteps ?? 0;
  if (!(Number.isInteger(warmup) && warmup >= 0)) throw new ConfigError('warm-up steps must be a non-negative integer', { field: 'lrWarmupSteps', found: warmup });
  const ramp = (k: number): number => k / Math.max(1, warmup);
  const total = (): number => {
    const t = options.totalSteps;
    if (!(Number.isInteger(t) && (t as number) > 0)) {
      throw new ConfigError(`lr scheduler "${name}" needs the total number of steps`, { field: 'maxTrainSteps', expected: 'a positive integer', found: t });
    }
    return t as number;
  };
  switch (name) {
    case 'constant':
      return () => 1;
    case 'constant_with_warmup':
      return (k) => (k < warmup ? ramp(k) : 1);
    case 'linear': {
      const T = total();
      return (k) => (k < warmup ? ramp(k) : Math.max(0, (T - k) / Math.max(1, T - warmup)));
    }
    case 'cosine': {
      const T = total();
      const cycles = options.numCycles ?? 0.5;
      return (k) => {
        if (k < warmup) return ramp(k);
        const progress = (k - warmup) / Math.max(1, T - warmup);
        return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * cycles * 2 * progress)));
      };
    }
    case 'piecewise_constant': {
      // diffusers' get_piecewise_constant_schedule ignores warm-up; here a warm-up, if set, ramps the first rule in
      const rule = parseStepRules(options.stepRules);
      return (k) => (k < warmup ? ramp(k) : 1) * rule(k);
    }
    default:
      throw new ConfigError('unknown lr scheduler', { field: 'lrScheduler', expected: LR_SCHEDULERS.join(' | '), found: name });
  }
}

/** Parses diffusers' `step_rules` (see {@link LrScheduleOptions.stepRules}) into completed steps → multiplier. */
export function parseStepRules(rules: string | undefined): LrSchedule {
  const bad = (why: string): ConfigError =>
    new ConfigError(`lr step rules: ${why}`, { field: 'lrStepRules', expected: '"multiplier:steps,…,lastMultiplier", e.g. "1:1100,0.35"', found: rules });
  if (rules === undefined || rules.trim() === '') throw bad('piecewise_constant needs them');
  const parts = rules.split(',').map((r) => r.trim());
  const multiplier = (text: string): number => {
    const m = Number(text);
    if (text === '' || !Number.isFinite(m) || m < 0) throw bad(`"${text}" is not a non-negative multiplier`);
    return m;
  };
  const bounds = parts.slice(0, -1).map((r) => {
    const [m, s, extra] = r.split(':');
    const steps = Number(s);
    if (extra !== undefined || s === undefined || !Number.isInteger(steps) || steps <= 0) throw bad(`"${r}" is not multiplier:steps with a positive integer step`);
    return { until: steps, m: multiplier(m ?? '') };
  });
  for (let i = 1; i < bounds.length; i++) if (bounds[i]!.until <= bounds[i - 1]!.until) throw bad('step boundaries must increase');
  const last = multiplier(parts[parts.length - 1]!);
  return (k) => bounds.find((b) => k < b.until)?.m ?? last;
}
