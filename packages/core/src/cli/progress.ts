/**
 * Progress reporting. Packages never print: they accept `onProgress?: (p: Progress) => void`. Apps draw a bar on a
 * TTY and plain lines (at most one per `intervalMs`) otherwise.
 */
export interface Progress {
  /** What is being done, e.g. `prune` or `expert 3`. */
  label: string;
  done: number;
  total: number;
  /** Extra values shown after the bar, e.g. `{ loss: 0.123 }`. */
  info?: Record<string, number | string>;
  /**
   * The producer's own estimate of the remaining seconds (e.g. the training loop's, over its recent steps); when set,
   * the bar shows it instead of its own, so the two never disagree.
   */
  etaSec?: number;
}

export type ProgressCallback = (p: Progress) => void;

function fmt(v: number | string): string {
  if (typeof v === 'string') return v;
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 1e4 || Math.abs(v) < 1e-3 ? v.toExponential(3) : v.toFixed(4);
}

function fmtTime(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '?';
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (h > 0) return `${h}h${String(m).padStart(2, '0')}m`;
  return m > 0 ? `${m}m${String(Math.floor(s % 60)).padStart(2, '0')}s` : `${s.toFixed(1)}s`;
}

export interface ProgressBarOptions {
  /** Minimum ms between two drawn updates of the same label (default 100 on a TTY, 5000 off it). */
  intervalMs?: number;
  /**
   * The `done` value this process starts from (a resumed run: the checkpoint's step). Rate and ETA then count only
   * the steps done since the bar was created. Without it, the first update of each label is the starting point.
   */
  startAt?: number;
  /** Clock in ms (tests); default `Date.now`. */
  now?: () => number;
}

/** Where rate and ETA are measured from: `done` at time `t` (ms). */
interface Baseline {
  done: number;
  t: number;
}

/**
 * Draws `Progress` on a stream: `label [####....] done/total pct% elapsed<eta info`. The percentage is of the whole
 * job, but elapsed time, rate and ETA belong to this process: a run resumed at step 1000 of 6000 extrapolates from the
 * steps done since it started, not as if the first 1000 had taken the elapsed time.
 */
export class ProgressBar {
  private readonly stream: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  private readonly intervalMs: number;
  private readonly now: () => number;
  private readonly start: number;
  private readonly startAt: number | undefined;
  /** Per label: where its rate is measured from. */
  private readonly baselines = new Map<string, Baseline>();
  private lastDraw = 0;
  private lastLabel = '';

  constructor(stream: NodeJS.WritableStream = process.stderr, options: ProgressBarOptions = {}) {
    this.stream = stream as ProgressBar['stream'];
    this.intervalMs = options.intervalMs ?? (this.stream.isTTY ? 100 : 5000);
    this.now = options.now ?? (() => Date.now());
    this.start = this.now();
    this.startAt = options.startAt;
  }

  /** A `ProgressCallback` bound to this bar. */
  readonly update: ProgressCallback = (p) => {
    const now = this.now();
    this.baseline(p, now);
    const finished = p.done >= p.total;
    if (!finished && p.label === this.lastLabel && now - this.lastDraw < this.intervalMs) return;
    this.lastDraw = now;
    this.lastLabel = p.label;
    this.stream.write(this.render(p, now) + (this.stream.isTTY ? (finished ? '\n' : '') : '\n'));
  };

  /**
   * The baseline of `p.label`, recorded on first sight: `startAt` at the bar's creation for the first label when
   * given, else this update itself (rate and ETA are unknown until the next one).
   */
  private baseline(p: Progress, now: number): Baseline {
    let b = this.baselines.get(p.label);
    if (b === undefined) {
      b = this.startAt !== undefined && this.baselines.size === 0 ? { done: this.startAt, t: this.start } : { done: p.done, t: now };
      this.baselines.set(p.label, b);
    }
    return b;
  }

  render(p: Progress, now = this.now()): string {
    const frac = p.total > 0 ? Math.min(1, p.done / p.total) : 0;
    const elapsed = (now - this.start) / 1000;
    const base = this.baselines.get(p.label) ?? (this.startAt !== undefined ? { done: this.startAt, t: this.start } : { done: p.done, t: now });
    const ranSec = (now - base.t) / 1000;
    const rate = ranSec > 0 ? (p.done - base.done) / ranSec : 0; // units per second in this process
    const eta = p.etaSec ?? (rate > 0 ? Math.max(0, p.total - p.done) / rate : Infinity);
    const info = p.info ? ' ' + Object.entries(p.info).map(([k, v]) => `${k}=${fmt(v)}`).join(' ') : '';
    const text = `${p.done}/${p.total} ${(frac * 100).toFixed(0).padStart(3)}% ${fmtTime(elapsed)}<${fmtTime(eta)}${info}`;
    if (!this.stream.isTTY) return `${p.label}: ${text}`;
    const width = Math.max(10, Math.min(30, (this.stream.columns ?? 80) - text.length - p.label.length - 6));
    const filled = Math.round(frac * width);
    return `\r${p.label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${text}\x1b[K`;
  }
}
