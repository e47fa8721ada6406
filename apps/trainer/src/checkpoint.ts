import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { z } from 'zod';
import { encodeSafetensors, HostTensor, InputError, NumericError, readSafetensors, RngState, SafetensorsReader, WritableTensor, writeFileAtomic } from '@aptp/core';
import type { AdamWState } from './optim/adamW';

/**
 * Training checkpoints (issue 7 item 5). One folder per saved step inside the run folder:
 *
 *   checkpoint-<step>/weights.safetensors    named parameters (and any other tensor state, e.g. `embedding_gs`)
 *   checkpoint-<step>/optimizer.safetensors  AdamW moments `<param>.exp_avg`, `<param>.exp_avg_sq`
 *   checkpoint-<step>/state.json             step, RNG states, data-iterator state, resolved config, metrics,
 *                                            optimizer step counters, and the size + SHA-256 of both files
 *   latest                                   the folder name of the newest complete checkpoint
 *
 * Writing is crash-safe: everything goes into a hidden temp folder, each file is fsynced, `state.json` is written last,
 * the folder is renamed into place, and only then is `latest` replaced (atomically). A killed process leaves at worst a
 * hidden temp folder (ignored, removed by the next save) and `latest` pointing to the previous complete checkpoint.
 * `latest` is authoritative; when it is missing or its checkpoint fails validation, the loader falls back to the
 * newest valid `checkpoint-<step>` folder and says so.
 */
export const CHECKPOINT_FILES = { weights: 'weights.safetensors', optimizer: 'optimizer.safetensors', state: 'state.json' } as const;
export const LATEST_POINTER = 'latest';
export const CHECKPOINT_FORMAT = 'aptp-checkpoint';
export const CHECKPOINT_VERSION = 1;

const CHECKPOINT_DIR = /^checkpoint-(\d+)$/;
const TEMP_DIR = /^\.checkpoint-\d+\.(tmp|old)-/;

/** What a stage hands to `saveCheckpoint`. */
export interface CheckpointContent {
  /** Completed optimizer steps. */
  step: number;
  /** Named tensors (tfjs or host); read at the step boundary. Non-finite values are refused. */
  weights: Record<string, WritableTensor>;
  optimizer?: AdamWState | null;
  /** Host RNG streams by name (`Rng.getState()`). */
  rng?: Record<string, RngState>;
  /** Data-iterator state (opaque JSON from the caller). */
  data?: unknown;
  /** The resolved config of the run. */
  config?: unknown;
  /** Metrics summary at this step. */
  metrics?: Record<string, unknown>;
  /** Any other JSON state the stage needs to continue exactly (e.g. phase). */
  extra?: unknown;
}

const fileRecordSchema = z.strictObject({ bytes: z.number().int().min(0), sha256: z.string().regex(/^[0-9a-f]{64}$/) });
const rngStateSchema = z.strictObject({
  s: z.tuple([z.number().int(), z.number().int(), z.number().int(), z.number().int()]),
  spare: z.number().nullable(),
});

/** `state.json`. */
export const checkpointStateSchema = z.strictObject({
  format: z.literal(CHECKPOINT_FORMAT),
  version: z.literal(CHECKPOINT_VERSION),
  step: z.number().int().min(0),
  savedAt: z.string(),
  rng: z.record(z.string(), rngStateSchema),
  data: z.unknown(),
  config: z.unknown(),
  metrics: z.record(z.string(), z.unknown()),
  extra: z.unknown(),
  optimizer: z.strictObject({ step: z.number().int().min(0), paramSteps: z.record(z.string(), z.number().int().positive()) }).nullable(),
  files: z.strictObject({ [CHECKPOINT_FILES.weights]: fileRecordSchema, [CHECKPOINT_FILES.optimizer]: fileRecordSchema.optional() }),
});
export type CheckpointState = z.output<typeof checkpointStateSchema>;

export interface LoadedCheckpoint {
  dir: string;
  step: number;
  state: CheckpointState;
  weights: Map<string, HostTensor>;
  optimizer: AdamWState | null;
}

export interface SaveCheckpointOptions {
  /** Keep this many newest checkpoints (`checkpoints_total_limit`); older ones are deleted after the save. */
  keepLast?: number;
}

/** Checks tensors for NaN/Inf on the host; throws NumericError naming the tensor and the first bad index. */
export function assertFiniteTensors(tensors: Record<string, HostTensor>, what = 'tensor'): void {
  for (const [name, t] of Object.entries(tensors)) {
    if (t.dtype !== 'float32' && t.dtype !== 'float64') continue;
    const d = t.data as Float32Array | Float64Array;
    for (let i = 0; i < d.length; i++) {
      if (!Number.isFinite(d[i]!)) {
        throw new NumericError(`non-finite ${what}, refusing to write a checkpoint`, { code: 'E_NONFINITE', field: name, expected: 'finite values', found: `${d[i]} at flat index ${i}` });
      }
    }
  }
}

function toHost(name: string, t: WritableTensor): HostTensor {
  if (!(t instanceof tf.Tensor)) return t;
  const data = t.dataSync();
  if (t.dtype === 'float32') return { dtype: 'float32', shape: [...t.shape], data: Float32Array.from(data as Float32Array) };
  if (t.dtype === 'int32' || t.dtype === 'bool') return { dtype: 'int32', shape: [...t.shape], data: Int32Array.from(data as Int32Array) };
  throw new InputError('cannot checkpoint this tensor dtype', { field: name, expected: 'float32 | int32 | bool', found: t.dtype });
}

function fsyncDir(dir: string): void {
  let fd: number | null = null;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch {
    // Some file systems refuse fsync on directories; the renames are still atomic there.
  } finally {
    if (fd !== null) fs.closeSync(fd);
  }
}

function writeTracked(file: string, chunks: Uint8Array[]): { bytes: number; sha256: string } {
  const hash = crypto.createHash('sha256');
  let bytes = 0;
  for (const c of chunks) {
    hash.update(c);
    bytes += c.byteLength;
  }
  writeFileAtomic(file, chunks);
  return { bytes, sha256: hash.digest('hex') };
}

/** `checkpoint-<step>` folders of a run folder, newest first. */
export function listCheckpoints(root: string): { dir: string; step: number }[] {
  if (!fs.existsSync(root)) return [];
  return fs
    .readdirSync(root, { withFileTypes: true })
    .filter((e) => e.isDirectory() && CHECKPOINT_DIR.test(e.name))
    .map((e) => ({ dir: path.join(root, e.name), step: Number(CHECKPOINT_DIR.exec(e.name)![1]) }))
    .sort((a, b) => b.step - a.step);
}

/**
 * Writes `root/checkpoint-<step>/` atomically, points `root/latest` at it, removes leftovers of interrupted saves and
 * all but the `keepLast` newest checkpoints (checkpoints of a later step than this one belong to an abandoned timeline
 * after a resume from an older checkpoint and are removed too). Returns the checkpoint folder.
 */
export function saveCheckpoint(root: string, content: CheckpointContent, options: SaveCheckpointOptions = {}): string {
  const keepLast = options.keepLast ?? 2;
  if (!(Number.isInteger(content.step) && content.step >= 0)) throw new InputError('checkpoint step must be a non-negative integer', { field: 'step', found: content.step });
  if (!(Number.isInteger(keepLast) && keepLast >= 1)) throw new InputError('keepLast must be a positive integer', { field: 'keepLast', found: keepLast });
  // Read everything to the host first and refuse non-finite values before touching the disk.
  const weights: Record<string, HostTensor> = {};
  for (const [name, t] of Object.entries(content.weights)) weights[name] = toHost(name, t);
  assertFiniteTensors(weights, 'weight');
  if (content.optimizer) assertFiniteTensors(content.optimizer.moments, 'optimizer moment');

  fs.mkdirSync(root, { recursive: true });
  const name = `checkpoint-${content.step}`;
  const finalDir = path.join(root, name);
  const tmpDir = path.join(root, `.${name}.tmp-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
  fs.mkdirSync(tmpDir);
  try {
    const files: CheckpointState['files'] = {
      [CHECKPOINT_FILES.weights]: writeTracked(path.join(tmpDir, CHECKPOINT_FILES.weights), encodeSafetensors(weights)),
    };
    if (content.optimizer) {
      files[CHECKPOINT_FILES.optimizer] = writeTracked(path.join(tmpDir, CHECKPOINT_FILES.optimizer), encodeSafetensors(content.optimizer.moments));
    }
    const state: CheckpointState = {
      format: CHECKPOINT_FORMAT,
      version: CHECKPOINT_VERSION,
      step: content.step,
      savedAt: new Date().toISOString(),
      rng: content.rng ?? {},
      data: content.data ?? null,
      config: content.config ?? null,
      metrics: content.metrics ?? {},
      extra: content.extra ?? null,
      optimizer: content.optimizer ? { step: content.optimizer.step, paramSteps: content.optimizer.paramSteps } : null,
      files,
    };
    writeFileAtomic(path.join(tmpDir, CHECKPOINT_FILES.state), `${JSON.stringify(state, null, 2)}\n`);
    fsyncDir(tmpDir);
    if (fs.existsSync(finalDir)) {
      // Re-saving a step (after a resume): move the old folder aside first; rename cannot replace a non-empty folder.
      const old = path.join(root, `.${name}.old-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
      fs.renameSync(finalDir, old);
      fs.renameSync(tmpDir, finalDir);
      fs.rmSync(old, { recursive: true, force: true });
    } else {
      fs.renameSync(tmpDir, finalDir);
    }
    fsyncDir(root);
  } catch (err) {
    fs.rmSync(tmpDir, { recursive: true, force: true });
    throw err;
  }
  writeFileAtomic(path.join(root, LATEST_POINTER), `${name}\n`);
  fsyncDir(root);
  // Housekeeping, only after `latest` is safe.
  for (const e of fs.readdirSync(root)) {
    if (TEMP_DIR.test(e)) fs.rmSync(path.join(root, e), { recursive: true, force: true });
  }
  const all = listCheckpoints(root);
  const older = all.filter((c) => c.step < content.step).slice(keepLast - 1);
  const newer = all.filter((c) => c.step > content.step);
  for (const c of [...newer, ...older]) fs.rmSync(c.dir, { recursive: true, force: true });
  return finalDir;
}

/** The sha256 of a file's bytes, hex. */
export function sha256File(file: string): string {
  const hash = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(1 << 22);
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      hash.update(buf.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
  return hash.digest('hex');
}

export interface ValidateOptions {
  /** `full` (default) also checks SHA-256 of both files; `quick` checks sizes and safetensors headers only. */
  verify?: 'full' | 'quick';
}

/** Reads and validates `state.json` and the files it lists. Throws InputError naming the file and field. */
export function readCheckpointState(dir: string, options: ValidateOptions = {}): CheckpointState {
  const stateFile = path.join(dir, CHECKPOINT_FILES.state);
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(stateFile, 'utf8'));
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
    throw new InputError(missing ? 'checkpoint has no state file' : 'checkpoint state is not valid JSON', { code: 'E_CHECKPOINT', file: stateFile, cause: err });
  }
  const parsed = checkpointStateSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const field = issue.path.length > 0 ? issue.path.join('.') : issue.code === 'unrecognized_keys' ? (issue as { keys: string[] }).keys.join(', ') : '(root)';
    throw new InputError(issue.message, { code: 'E_CHECKPOINT', file: stateFile, field });
  }
  const state = parsed.data;
  const m = CHECKPOINT_DIR.exec(path.basename(dir));
  if (m && Number(m[1]) !== state.step) throw new InputError('step differs from the folder name', { code: 'E_CHECKPOINT', file: stateFile, field: 'step', expected: Number(m[1]), found: state.step });
  if ((state.optimizer === null) !== (state.files[CHECKPOINT_FILES.optimizer] === undefined)) {
    throw new InputError('optimizer state and optimizer file must both be present or both absent', { code: 'E_CHECKPOINT', file: stateFile, field: 'optimizer' });
  }
  for (const [name, rec] of Object.entries(state.files)) {
    if (!rec) continue;
    const file = path.join(dir, name);
    let size: number;
    try {
      size = fs.statSync(file).size;
    } catch (err) {
      throw new InputError('checkpoint file is missing', { code: 'E_CHECKPOINT', file, cause: err });
    }
    if (size !== rec.bytes) throw new InputError('file size differs from state.json (truncated?)', { code: 'E_CHECKPOINT_TRUNCATED', file, expected: `${rec.bytes} bytes`, found: `${size} bytes` });
    new SafetensorsReader(file).close(); // header and data offsets
    if ((options.verify ?? 'full') === 'full') {
      const sha = sha256File(file);
      if (sha !== rec.sha256) throw new InputError('file content differs from state.json (corrupt)', { code: 'E_CHECKPOINT_HASH', file, expected: `sha256 ${rec.sha256}`, found: `sha256 ${sha}` });
    }
  }
  return state;
}

/** Loads and validates one checkpoint folder. */
export function loadCheckpoint(dir: string, options: ValidateOptions = {}): LoadedCheckpoint {
  const state = readCheckpointState(dir, options);
  const weights = readSafetensors(path.join(dir, CHECKPOINT_FILES.weights));
  let optimizer: AdamWState | null = null;
  if (state.optimizer) {
    const moments = Object.fromEntries(readSafetensors(path.join(dir, CHECKPOINT_FILES.optimizer)));
    optimizer = { step: state.optimizer.step, paramSteps: state.optimizer.paramSteps, moments };
  }
  return { dir, step: state.step, state, weights, optimizer };
}

export interface FoundCheckpoint {
  dir: string;
  step: number;
  /** True when `latest` was missing or broken and an older valid checkpoint was chosen. */
  fellBack: boolean;
  /** Checkpoints that failed validation, with the reason (newest first). */
  rejected: { dir: string; reason: string }[];
  /** One line for the user, e.g. `latest → checkpoint-10 is invalid (...); resuming from checkpoint-5`. */
  message: string;
}

/**
 * The checkpoint to resume from in a run folder: the one `latest` names if it validates; otherwise the newest valid
 * `checkpoint-<step>` folder (with `fellBack` and the reasons). Null when the folder holds no valid checkpoint.
 */
export function findLatestCheckpoint(root: string, options: ValidateOptions = {}): FoundCheckpoint | null {
  const rejected: { dir: string; reason: string }[] = [];
  const pointerFile = path.join(root, LATEST_POINTER);
  let pointer: string | null = null;
  try {
    pointer = fs.readFileSync(pointerFile, 'utf8').trim();
  } catch {
    pointer = null;
  }
  if (pointer !== null) {
    const dir = path.join(root, pointer);
    if (!CHECKPOINT_DIR.test(pointer)) {
      rejected.push({ dir: pointerFile, reason: `does not name a checkpoint folder (found "${pointer.slice(0, 40)}")` });
    } else {
      try {
        const state = readCheckpointState(dir, options);
        return { dir, step: state.step, fellBack: false, rejected, message: `resuming from ${pointer} (step ${state.step})` };
      } catch (err) {
        rejected.push({ dir, reason: (err as Error).message });
      }
    }
  }
  for (const c of listCheckpoints(root)) {
    if (rejected.some((r) => r.dir === c.dir)) continue;
    try {
      readCheckpointState(c.dir, options);
    } catch (err) {
      rejected.push({ dir: c.dir, reason: (err as Error).message });
      continue;
    }
    const why = pointer === null ? `${LATEST_POINTER} is missing` : `${LATEST_POINTER} → ${pointer} is invalid (${rejected[0]!.reason})`;
    const skipped = rejected.length > 1 ? `; also skipped ${rejected.slice(1).map((r) => path.basename(r.dir)).join(', ')}` : '';
    return { dir: c.dir, step: c.step, fellBack: true, rejected, message: `${why}${skipped}; falling back to ${path.basename(c.dir)} (step ${c.step})` };
  }
  return null;
}

/**
 * The checkpoint a `--resume <path>` means: a checkpoint folder itself (must validate), or a run folder (its latest
 * valid checkpoint, with fallback). Throws InputError when there is nothing to resume from.
 */
export function resolveResume(target: string, options: ValidateOptions = {}): FoundCheckpoint {
  if (fs.existsSync(path.join(target, CHECKPOINT_FILES.state))) {
    const state = readCheckpointState(target, options);
    return { dir: target, step: state.step, fellBack: false, rejected: [], message: `resuming from ${path.basename(target)} (step ${state.step})` };
  }
  if (!fs.existsSync(target)) throw new InputError('nothing to resume from: folder does not exist', { code: 'E_RESUME', file: target });
  const found = findLatestCheckpoint(target, options);
  if (!found) {
    throw new InputError('nothing to resume from: no valid checkpoint-<step> folder', { code: 'E_RESUME', file: target, expected: `${LATEST_POINTER} or checkpoint-<step>/${CHECKPOINT_FILES.state}` });
  }
  return found;
}
