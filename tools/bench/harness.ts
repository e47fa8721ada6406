import * as os from 'node:os';
import { performance } from 'node:perf_hooks';

/**
 * Small benchmark harness: warm-up runs, then the median of N timed runs, with the machine's load and this process's
 * CPU share recorded next to every number (the dev machines are shared: a wall time means little without them).
 * Benchmarks are plain programs, never timed unit tests (STYLE.md §3 Tests).
 */

export interface MeasureOptions {
  /** Untimed runs first (JIT, wasm memory growth, tfjs kernel caches). */
  warmup: number;
  /** Timed runs; the median is reported. */
  reps: number;
}

export interface Timing {
  /** Every timed run, in order. */
  samplesMs: number[];
  medianMs: number;
  minMs: number;
  maxMs: number;
  /**
   * Process CPU time (user + system) / wall time over the timed runs. tfjs wasm and cpu are single-threaded here, so
   * an uncontended run shows ≈ 1.0; 0.5 means the OS gave us half a core (other processes competed).
   */
  cpuShare: number;
  /** Median CPU-time per run (ms): an estimate of the uncontended run time. */
  cpuMsPerRun: number;
  /** 1-minute load average at the start and at the end of the timed runs. */
  load1: [number, number];
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** Runs `fn` `warmup` times untimed, then `reps` times timed (each run awaited). */
export async function measure(fn: () => Promise<void> | void, options: MeasureOptions): Promise<Timing> {
  for (let i = 0; i < options.warmup; i++) await fn();
  const samplesMs: number[] = [];
  const cpuSamples: number[] = [];
  const load0 = os.loadavg()[0]!;
  const wall0 = performance.now();
  const cpu0 = cpuMs();
  for (let i = 0; i < options.reps; i++) {
    const c = cpuMs();
    const t = performance.now();
    await fn();
    samplesMs.push(performance.now() - t);
    cpuSamples.push(cpuMs() - c);
  }
  const wall = performance.now() - wall0;
  const cpu = cpuMs() - cpu0;
  return {
    samplesMs,
    medianMs: median(samplesMs),
    minMs: Math.min(...samplesMs),
    maxMs: Math.max(...samplesMs),
    cpuShare: wall > 0 ? cpu / wall : NaN,
    cpuMsPerRun: median(cpuSamples),
    load1: [load0, os.loadavg()[0]!],
  };
}

/** `{ load1, load5, load15, cores, cpu }` of this machine now. */
export function machineLoad(): { load1: number; load5: number; load15: number; cores: number; cpu: string } {
  const [load1, load5, load15] = os.loadavg() as [number, number, number];
  const cpus = os.cpus();
  return { load1, load5, load15, cores: cpus.length, cpu: cpus[0]?.model.trim() ?? 'unknown' };
}

export type Align = 'l' | 'r';

/** A plain-text table (GitHub-markdown compatible), columns padded to their widest cell. */
export function table(headers: readonly string[], rows: ReadonlyArray<readonly string[]>, align: readonly Align[] = []): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const cell = (s: string, i: number) => ((align[i] ?? 'l') === 'r' ? s.padStart(widths[i]!) : s.padEnd(widths[i]!));
  const line = (cells: readonly string[]) => `| ${cells.map(cell).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => ((align[i] ?? 'l') === 'r' ? `${'-'.repeat(w + 1)}:` : `${'-'.repeat(w + 2)}`)).join('|')}|`;
  return [line(headers), rule, ...rows.map(line)].join('\n');
}

/** Fixed-point with a sensible number of digits for timings and rates. */
export function fmt(x: number, digits?: number): string {
  if (!Number.isFinite(x)) return String(x);
  const d = digits ?? (Math.abs(x) >= 100 ? 0 : Math.abs(x) >= 10 ? 1 : 2);
  return x.toFixed(d);
}

/** `a / b` as `×1.23`. */
export function ratio(a: number, b: number): string {
  return `×${fmt(a / b, 2)}`;
}
