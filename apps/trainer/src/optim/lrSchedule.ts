import { ConfigError } from '@aptp/core';

/**
 * Learning-rate schedules as multipliers of a group's base lr, with diffusers' `get_scheduler` semantics
 * (`diffusers/optimization.py`, a torch `LambdaLR`): the optimizer step that follows `k` completed steps uses
 * `lr = baseLr × lrMultiplier(k)`. So with warm-up the very first step (k = 0) has lr 0, as in the reference, where
 * `optimizer.step()` runs before `lr_scheduler.step()`. The reference multiplies its warm-up and total steps by the
 * number of processes (APTP.md §1.3); a single process multiplies by 1.
 */
export const LR_SCHEDULERS = ['constant', 'constant_with_warmup', 'linear', 'cosine'] as const;
export type LrSchedulerName = (typeof LR_SCHEDULERS)[number];

export interface LrScheduleOptions {
  /** `lr_warmup_steps`: linear ramp 0 → 1 over this many steps (ignored by `constant`, as in diffusers). */
  warmupSteps?: number;
  /** `max_train_steps`: needed by `linear` and `cosine` (they decay to 0 at this step). */
  totalSteps?: number;
  /** Cosine half-waves: diffusers default 0.5 (one decay from 1 to 0). */
  numCycles?: number;
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
    default:
      throw new ConfigError('unknown lr scheduler', { field: 'lrScheduler', expected: LR_SCHEDULERS.join(' | '), found: name });
  }
}
