import * as fs from 'node:fs';
import * as path from 'node:path';
import { ConfigError, InputError, writeJsonAtomic } from '@aptp/core';

/**
 * The folder of one training run (STYLE.md §3 CLI): `runs/<name>-<timestamp>/` (or `--out`), holding
 * `config.json` (the resolved config), `metrics.jsonl` (one JSON object per step, append-only, each line written with
 * one `write` and fdatasync'ed, so a crash loses at most a torn last line, which readers skip), the
 * `checkpoint-<step>/` folders and `latest` (see checkpoint.ts), and `summary.json` at the end.
 */
export const RUN_FILES = { config: 'config.json', metrics: 'metrics.jsonl', summary: 'summary.json' } as const;

export interface CreateRunDirOptions {
  /** Run name, e.g. `prune`; the folder is `<root>/<name>-<timestamp>`. */
  name: string;
  /** Parent folder (default `runs`). */
  root?: string;
  /** Use exactly this folder instead (`--out`); it must not already hold a run. */
  out?: string;
  /** The resolved config, written to config.json. */
  config?: unknown;
  /** Clock for the timestamp (tests). */
  now?: Date;
}

export interface OpenRunDirOptions {
  /** Resuming at this step: metrics records of later steps (written after that checkpoint) are dropped. */
  resumeStep?: number;
  /** Rewrite config.json with this resolved config. */
  config?: unknown;
}

/** JSON with NaN/±Infinity kept as strings ("NaN", "Infinity", "-Infinity") instead of JSON's silent null. */
export function metricsLine(record: Record<string, unknown>): string {
  return JSON.stringify(record, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v));
}

function timestamp(d: Date): string {
  // 2025-01-31T12-34-56 (UTC, no colons: valid on every file system)
  return d.toISOString().slice(0, 19).replace(/:/g, '-');
}

/** Reads metrics.jsonl; a torn (unparseable) last line from a crash is skipped, a bad line elsewhere is an error. */
export function readMetrics(file: string): Record<string, unknown>[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new InputError('cannot read metrics', { file, cause: err });
  }
  const lines = text.split('\n');
  const out: Record<string, unknown>[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.trim() === '') continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch (err) {
      const last = lines.slice(i + 1).every((l) => l.trim() === '');
      if (last) break; // torn write of a killed process
      throw new InputError('metrics line is not valid JSON', { file, field: `line ${i + 1}`, cause: err });
    }
  }
  return out;
}

export class RunDir {
  readonly dir: string;
  private fd: number | null;

  private constructor(dir: string) {
    this.dir = dir;
    this.fd = fs.openSync(path.join(dir, RUN_FILES.metrics), 'a');
  }

  /** A new run folder with config.json written. */
  static create(options: CreateRunDirOptions): RunDir {
    let dir: string;
    if (options.out !== undefined) {
      dir = options.out;
      if (fs.existsSync(path.join(dir, RUN_FILES.config)) || fs.existsSync(path.join(dir, RUN_FILES.metrics))) {
        throw new ConfigError('run folder already holds a run; pass --resume to continue it or choose another --out', { code: 'E_RUN_EXISTS', field: '--out', found: dir });
      }
      fs.mkdirSync(dir, { recursive: true });
    } else {
      if (!/^[A-Za-z0-9._-]+$/.test(options.name)) throw new ConfigError('run name may only use letters, digits, ".", "_" and "-"', { field: 'name', found: options.name });
      const root = options.root ?? 'runs';
      fs.mkdirSync(root, { recursive: true });
      const base = path.join(root, `${options.name}-${timestamp(options.now ?? new Date())}`);
      dir = base;
      for (let i = 2; ; i++) {
        try {
          fs.mkdirSync(dir);
          break;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
          dir = `${base}-${i}`;
        }
      }
    }
    writeJsonAtomic(path.join(dir, RUN_FILES.config), options.config ?? {});
    return new RunDir(dir);
  }

  /**
   * Reopens an existing run folder to continue it. With `resumeStep`, metrics of steps after it are removed (they were
   * written after the checkpoint the run resumes from and will be produced again).
   */
  static open(dir: string, options: OpenRunDirOptions = {}): RunDir {
    if (!fs.existsSync(dir)) throw new InputError('run folder does not exist', { code: 'E_RUN_MISSING', file: dir });
    const metricsFile = path.join(dir, RUN_FILES.metrics);
    if (options.resumeStep !== undefined) {
      const keep = readMetrics(metricsFile).filter((r) => typeof r.step === 'number' && r.step <= options.resumeStep!);
      const text = keep.map((r) => `${metricsLine(r)}\n`).join('');
      const tmp = `${metricsFile}.${process.pid}.tmp`;
      fs.writeFileSync(tmp, text);
      const fd = fs.openSync(tmp, 'r+');
      fs.fsyncSync(fd);
      fs.closeSync(fd);
      fs.renameSync(tmp, metricsFile);
    }
    if (options.config !== undefined) writeJsonAtomic(path.join(dir, RUN_FILES.config), options.config);
    return new RunDir(dir);
  }

  get metricsFile(): string {
    return path.join(this.dir, RUN_FILES.metrics);
  }

  file(name: string): string {
    return path.join(this.dir, name);
  }

  /** Appends one record as a line (one write call, then fdatasync). */
  appendMetrics(record: Record<string, unknown>): void {
    if (this.fd === null) throw new InputError('run folder is closed', { code: 'E_CLOSED', file: this.metricsFile });
    const bytes = Buffer.from(`${metricsLine(record)}\n`, 'utf8');
    let written = 0;
    while (written < bytes.length) written += fs.writeSync(this.fd, bytes, written, bytes.length - written);
    fs.fdatasyncSync(this.fd);
  }

  /** Writes `<dir>/<name>` as JSON atomically. */
  writeJson(name: string, value: unknown): string {
    const file = this.file(name);
    writeJsonAtomic(file, value);
    return file;
  }

  /** Closes metrics.jsonl. Idempotent. */
  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }
}
