import * as path from 'node:path';
import { InputError } from '@aptp/core';
import { LoadedCheckpoint, loadCheckpoint, resolveResume } from '../checkpoint';
import { RunDir } from '../runDir';

/**
 * The run-folder part of a training command: a new `runs/<name>-<timestamp>/` (or `--out`), or — with `--resume
 * <run folder | checkpoint folder>` — the existing run folder, its checkpoint loaded and metrics trimmed to it.
 */
export interface StartRunOptions {
  /** Command name used in the folder name, e.g. `prune`. */
  name: string;
  /** The resolved config (config.json; compared with the checkpoint's on resume). */
  config: unknown;
  /** `--out`: the run folder. */
  out?: string;
  /** Parent of new run folders (default `runs`). */
  root?: string;
  /** `--resume`: a run folder or a checkpoint folder; `true` means the `--out` folder. */
  resume?: string | boolean;
}

export interface StartedRun {
  run: RunDir;
  /** The checkpoint to pass to `runTraining({ resume })`, or null for a fresh run. */
  checkpoint: LoadedCheckpoint | null;
  /** What happened, for the user: which checkpoint, fallbacks, config changes. Empty for a fresh run. */
  notes: string[];
}

/** Leaf paths where two JSON values differ (`a.b.c`), at most `limit`. */
export function jsonDiffPaths(a: unknown, b: unknown, limit = 10, prefix = ''): string[] {
  if (JSON.stringify(a) === JSON.stringify(b)) return [];
  const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObj(a) || !isObj(b)) return [prefix || '(root)'];
  const out: string[] = [];
  for (const k of [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()) {
    for (const p of jsonDiffPaths(a[k], b[k], limit, prefix ? `${prefix}.${k}` : k)) {
      if (out.length >= limit) return out;
      out.push(p);
    }
  }
  return out;
}

export function startRun(options: StartRunOptions): StartedRun {
  if (options.resume === undefined || options.resume === false) {
    return { run: RunDir.create({ name: options.name, out: options.out, root: options.root, config: options.config }), checkpoint: null, notes: [] };
  }
  const target = options.resume === true ? options.out : options.resume;
  if (target === undefined) throw new InputError('--resume without a folder needs --out', { code: 'E_RESUME', field: '--resume' });
  const found = resolveResume(target);
  const checkpoint = loadCheckpoint(found.dir);
  const notes = [found.message];
  const changed = jsonDiffPaths(checkpoint.state.config, options.config);
  if (changed.length > 0) notes.push(`config differs from the checkpoint's at ${changed.join(', ')}; the run continues with the new values`);
  const run = RunDir.open(path.dirname(found.dir), { resumeStep: checkpoint.step, config: options.config });
  return { run, checkpoint, notes };
}
