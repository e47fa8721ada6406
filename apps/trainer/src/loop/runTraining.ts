import * as path from 'node:path';
import { InputError, NumericError, Progress } from '@aptp/core';
import { LoadedCheckpoint, saveCheckpoint } from '../checkpoint';
import { RunDir, RUN_FILES } from '../runDir';
import { restoreTraining, TrainingTarget } from './trainingTarget';

/**
 * The model-independent training loop (issue 7 items 5, 6): runs `step(i)` for i = start … steps−1, appends each
 * step's metrics to metrics.jsonl, checkpoints every `saveEvery` steps and at the end, stops cleanly on an aborted
 * `signal` (saves, then returns `status: 'aborted'`; the CLI maps SIGINT/SIGTERM to 130/143), stops on a non-finite
 * metric with a NumericError (the last good checkpoint stays `latest`; nothing is written after the bad step), and
 * reports progress (step, loss, chosen extra values, it/s, ETA). With `resume`, the target is restored first and the
 * loop continues at the checkpoint's step, producing the same losses as an uninterrupted run.
 */

/** One step's metrics: `loss` is required; other scalars (loss terms, resource ratios) and arrays (per-code usage). */
export type StepMetrics = { loss: number } & Record<string, number | number[]>;

export interface StepContext {
  signal?: AbortSignal;
}

export interface TrainingProgress extends Progress {
  /** The metrics of the step just finished. */
  metrics: StepMetrics;
  itPerSec: number;
  etaSec: number;
}

export interface RunTrainingOptions {
  /** Label for progress and the summary, e.g. `prune` or `expert 3`. */
  label?: string;
  /** Total optimizer steps of the run (`max_train_steps`). */
  steps: number;
  /** Performs step `i` (0-based; i = completed steps so far) and returns its metrics. */
  step: (i: number, ctx: StepContext) => Promise<StepMetrics> | StepMetrics;
  /** What gets saved and restored. */
  target: TrainingTarget;
  /** Run folder: metrics.jsonl, checkpoints, summary.json. */
  run: RunDir;
  /** Checkpoint every N completed steps (`checkpointing_steps`); 0 = only at the end or on abort. */
  saveEvery: number;
  /** Checkpoints to keep (`checkpoints_total_limit`, default 2). */
  keepLast?: number;
  /** A loaded checkpoint to continue from. */
  resume?: LoadedCheckpoint | null;
  /** The resolved config, stored in every checkpoint. */
  config?: unknown;
  /** Abort = save and return (SIGINT/SIGTERM). */
  signal?: AbortSignal;
  onProgress?: (p: TrainingProgress) => void;
  /** Metric names shown next to the loss in progress (e.g. `resourceRatioMean`); default all scalar metrics. */
  progressKeys?: string[];
  /** Called after each checkpoint is written. */
  onCheckpoint?: (dir: string, step: number) => void;
  /** Clock in ms (tests). */
  now?: () => number;
}

export interface TrainingSummary {
  label: string;
  status: 'completed' | 'aborted';
  runDir: string;
  startStep: number;
  endStep: number;
  totalSteps: number;
  /** Steps run by this invocation. */
  stepsRun: number;
  elapsedSec: number;
  itPerSec: number;
  /** Metrics of the last step. */
  last: StepMetrics | null;
  /** Mean of each scalar metric over the steps of this invocation. */
  mean: Record<string, number>;
  /** The last checkpoint written (or resumed from), if any. */
  checkpoint: string | null;
}

function nonFinite(metrics: Record<string, unknown>): { term: string; value: unknown } | null {
  for (const [term, v] of Object.entries(metrics)) {
    if (typeof v === 'number' && !Number.isFinite(v)) return { term, value: v };
    if (Array.isArray(v)) {
      const i = v.findIndex((x) => typeof x !== 'number' || !Number.isFinite(x));
      if (i >= 0) return { term: `${term}[${i}]`, value: v[i] };
    }
  }
  return null;
}

/**
 * Throws NumericError if any metric (or array element) is NaN/Inf, naming the step and term. Steps may call it on
 * their loss terms before applying the optimizer update, so the weights in memory stay finite too.
 */
export function assertFiniteMetrics(metrics: Record<string, unknown>, step: number, lastGood?: string | null): void {
  const bad = nonFinite(metrics);
  if (!bad) return;
  const keep = lastGood === undefined ? '' : lastGood ? `; last good checkpoint ${path.basename(lastGood)} kept` : '; no checkpoint was written';
  throw new NumericError(`non-finite loss at step ${step}${keep}`, { code: 'E_NONFINITE', field: bad.term, expected: 'a finite number', found: String(bad.value) });
}

function formatDuration(sec: number): string {
  if (!Number.isFinite(sec)) return '?';
  const h = Math.floor(sec / 3600);
  const m = Math.floor((sec % 3600) / 60);
  const s = Math.round(sec % 60);
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : m > 0 ? `${m}m${String(s).padStart(2, '0')}s` : `${(sec % 60).toFixed(1)}s`;
}

function scalarEntries(m: Record<string, unknown>): [string, number][] {
  return Object.entries(m).filter((e): e is [string, number] => typeof e[1] === 'number');
}

export async function runTraining(options: RunTrainingOptions): Promise<TrainingSummary> {
  const { steps, target, run } = options;
  const label = options.label ?? 'train';
  const now = options.now ?? (() => performance.now());
  if (!(Number.isInteger(steps) && steps >= 0)) throw new InputError('steps must be a non-negative integer', { field: 'steps', found: steps });
  if (!(Number.isInteger(options.saveEvery) && options.saveEvery >= 0)) throw new InputError('saveEvery must be a non-negative integer', { field: 'saveEvery', found: options.saveEvery });

  let start = 0;
  let lastCheckpoint: string | null = null;
  if (options.resume) {
    restoreTraining(target, options.resume);
    start = options.resume.step;
    lastCheckpoint = options.resume.dir;
  }
  let lastSavedStep = options.resume ? start : -1;
  const sums = new Map<string, number>();
  let last: StepMetrics | null = null;
  const t0 = now();
  const recent: number[] = []; // step end times, for it/s over the last steps
  let completed = start;

  const summary = (status: TrainingSummary['status']): TrainingSummary => {
    const elapsedSec = (now() - t0) / 1000;
    const stepsRun = completed - start;
    const mean: Record<string, number> = {};
    for (const [k, s] of sums) mean[k] = s / Math.max(1, stepsRun);
    return {
      label,
      status,
      runDir: run.dir,
      startStep: start,
      endStep: completed,
      totalSteps: steps,
      stepsRun,
      elapsedSec,
      itPerSec: elapsedSec > 0 ? stepsRun / elapsedSec : 0,
      last,
      mean,
      checkpoint: lastCheckpoint,
    };
  };

  const save = (): void => {
    if (lastSavedStep === completed) return;
    const host = target.hostState?.() ?? {};
    const s = summary('completed');
    const dir = saveCheckpoint(
      run.dir,
      {
        step: completed,
        weights: target.weights(),
        optimizer: target.optimizer ? target.optimizer.getState() : null,
        rng: host.rng,
        data: host.data,
        extra: host.extra,
        config: options.config,
        metrics: { last: s.last, mean: s.mean, stepsRun: s.stepsRun },
      },
      { keepLast: options.keepLast },
    );
    lastSavedStep = completed;
    lastCheckpoint = dir;
    options.onCheckpoint?.(dir, completed);
  };

  const finish = (status: TrainingSummary['status']): TrainingSummary => {
    const s = summary(status);
    run.writeJson(RUN_FILES.summary, s);
    return s;
  };

  for (let i = start; i < steps; i++) {
    // Yield to the event loop once per step: a synchronous step (tfjs math) would otherwise starve the SIGINT/SIGTERM
    // handlers that abort `signal` (`await` of an already-resolved promise only runs microtasks).
    await new Promise<void>((resolve) => setImmediate(resolve));
    if (options.signal?.aborted) {
      save();
      return finish('aborted');
    }
    const metrics = await options.step(i, { signal: options.signal });
    if (typeof metrics?.loss !== 'number') throw new InputError('a step must return its metrics with a numeric loss', { field: 'loss', found: metrics ? typeof metrics.loss : String(metrics) });
    const stepNumber = i + 1;
    const record: Record<string, unknown> = { step: stepNumber, ...metrics };
    const info = target.optimizer?.lastStep;
    if (info) {
      for (const [g, lr] of Object.entries(info.lrs)) record[`lr.${g}`] = lr;
      if (info.gradNorm !== undefined) record.gradNorm = info.gradNorm;
    }
    const tEnd = now();
    record.elapsedSec = Number(((tEnd - t0) / 1000).toFixed(3));
    run.appendMetrics(record);
    // NaN guard: nothing is saved after a non-finite step; `latest` keeps naming the last good checkpoint.
    if (nonFinite(metrics)) {
      completed = stepNumber;
      run.writeJson(RUN_FILES.summary, { ...summary('aborted'), status: 'numeric-error', failedStep: stepNumber });
      assertFiniteMetrics(metrics, stepNumber, lastCheckpoint);
    }
    completed = stepNumber;
    last = metrics;
    for (const [k, v] of scalarEntries(metrics)) sums.set(k, (sums.get(k) ?? 0) + v);

    recent.push(tEnd);
    if (recent.length > 21) recent.shift();
    const itPerSec = recent.length > 1 ? (recent.length - 1) / ((recent[recent.length - 1]! - recent[0]!) / 1000) : (completed - start) / Math.max(1e-9, (tEnd - t0) / 1000);
    const etaSec = itPerSec > 0 ? (steps - completed) / itPerSec : Infinity;
    if (options.onProgress) {
      const shown = options.progressKeys
        ? options.progressKeys.filter((k) => typeof metrics[k] === 'number').map((k) => [k, metrics[k] as number] as const)
        : scalarEntries(metrics).filter(([k]) => k !== 'loss');
      options.onProgress({
        label,
        done: completed,
        total: steps,
        info: { loss: metrics.loss, ...Object.fromEntries(shown), 'it/s': Number(itPerSec.toFixed(3)), eta: formatDuration(etaSec) },
        metrics,
        itPerSec,
        etaSec,
      });
    }
    if (options.saveEvery > 0 && completed % options.saveEvery === 0) save();
  }
  save();
  return finish('completed');
}

/** The end-of-run summary for people (the command prints it, then the run folder's path). */
export function formatSummary(s: TrainingSummary): string {
  const lines = [
    `${s.label}: ${s.status} at step ${s.endStep}/${s.totalSteps} (${s.stepsRun} steps in ${formatDuration(s.elapsedSec)}, ${s.itPerSec.toFixed(2)} it/s)`,
  ];
  if (s.last) {
    const fmt = (v: number): string => (Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(3) : v.toFixed(4));
    lines.push(`  last: ${scalarEntries(s.last).map(([k, v]) => `${k}=${fmt(v)}`).join(' ')}`);
    lines.push(`  mean: ${Object.entries(s.mean).map(([k, v]) => `${k}=${fmt(v)}`).join(' ')}`);
  }
  if (s.checkpoint) lines.push(`  checkpoint: ${s.checkpoint}`);
  lines.push(`  run folder: ${s.runDir}`);
  return `${lines.join('\n')}\n`;
}
