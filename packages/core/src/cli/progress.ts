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
}

export type ProgressCallback = (p: Progress) => void;

function fmt(v: number | string): string {
  if (typeof v === 'string') return v;
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 1e4 || Math.abs(v) < 1e-3 ? v.toExponential(3) : v.toFixed(4);
}

function fmtTime(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const m = Math.floor(s / 60);
  return m > 0 ? `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${s.toFixed(1)}s`;
}

export class ProgressBar {
  private readonly stream: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  private readonly intervalMs: number;
  private readonly start = Date.now();
  private lastDraw = 0;
  private lastLabel = '';

  constructor(stream: NodeJS.WritableStream = process.stderr, options: { intervalMs?: number } = {}) {
    this.stream = stream as ProgressBar['stream'];
    this.intervalMs = options.intervalMs ?? (this.stream.isTTY ? 100 : 5000);
  }

  /** A `ProgressCallback` bound to this bar. */
  readonly update: ProgressCallback = (p) => {
    const now = Date.now();
    const finished = p.done >= p.total;
    if (!finished && p.label === this.lastLabel && now - this.lastDraw < this.intervalMs) return;
    this.lastDraw = now;
    this.lastLabel = p.label;
    this.stream.write(this.render(p, now) + (this.stream.isTTY ? (finished ? '\n' : '') : '\n'));
  };

  render(p: Progress, now = Date.now()): string {
    const frac = p.total > 0 ? Math.min(1, p.done / p.total) : 0;
    const elapsed = (now - this.start) / 1000;
    const eta = frac > 0 ? (elapsed * (1 - frac)) / frac : Infinity;
    const info = p.info ? ' ' + Object.entries(p.info).map(([k, v]) => `${k}=${fmt(v)}`).join(' ') : '';
    const text = `${p.done}/${p.total} ${(frac * 100).toFixed(0).padStart(3)}% ${fmtTime(elapsed)}<${fmtTime(eta)}${info}`;
    if (!this.stream.isTTY) return `${p.label}: ${text}`;
    const width = Math.max(10, Math.min(30, (this.stream.columns ?? 80) - text.length - p.label.length - 6));
    const filled = Math.round(frac * width);
    return `\r${p.label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${text}\x1b[K`;
  }
}
