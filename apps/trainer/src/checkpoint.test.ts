import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { InputError, NumericError, Rng } from '@aptp/core';
import {
  CheckpointContent,
  findLatestCheckpoint,
  LATEST_POINTER,
  listCheckpoints,
  loadCheckpoint,
  readCheckpointState,
  resolveResume,
  saveCheckpoint,
} from './checkpoint';

const tmp = (): string => fs.mkdtempSync(path.join(os.tmpdir(), 'aptp-ckpt-'));
const latest = (root: string): string => fs.readFileSync(path.join(root, LATEST_POINTER), 'utf8').trim();

function content(step: number, scale = 1): CheckpointContent {
  const rng = Rng.forKey(5, 'ckpt', step);
  rng.nextNormal(); // leaves a cached Box–Muller spare in the state
  return {
    step,
    weights: {
      'hypernet.mh_fc.0.weight': { dtype: 'float32', shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6].map((x) => x * scale)) },
      'quantizer.embedding_gs': { dtype: 'float32', shape: [4], data: Float32Array.from([0.1, 0.2, 0.3, 0.4]) },
      counts: { dtype: 'int32', shape: [2], data: Int32Array.from([7, 8]) },
    },
    optimizer: {
      step,
      paramSteps: { 'hypernet.mh_fc.0.weight': step },
      moments: {
        'hypernet.mh_fc.0.weight.exp_avg': { dtype: 'float32', shape: [2, 3], data: new Float32Array([0.5, -0.5, 0, 1e-3, 2, 3]) },
        'hypernet.mh_fc.0.weight.exp_avg_sq': { dtype: 'float32', shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) },
      },
    },
    rng: { noise: rng.getState() },
    data: { epoch: 2, position: 17, skipped: ['row-3'] },
    config: { training: { maxTrainSteps: 100 } },
    metrics: { loss: 0.25 },
    extra: { phase: 'main' },
  };
}

describe('checkpoints', () => {
  let root: string;
  beforeEach(() => {
    root = tmp();
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  it('round-trips weights, optimizer state, RNG, data state, config and metrics', () => {
    const c = content(5);
    const dir = saveCheckpoint(root, c);
    expect(dir).toBe(path.join(root, 'checkpoint-5'));
    expect(fs.readdirSync(dir).sort()).toEqual(['optimizer.safetensors', 'state.json', 'weights.safetensors']);
    expect(latest(root)).toBe('checkpoint-5');
    const ck = loadCheckpoint(dir);
    expect(ck.step).toBe(5);
    for (const [name, t] of Object.entries(c.weights)) {
      const got = ck.weights.get(name)!;
      expect(got.shape).toEqual((t as { shape: number[] }).shape);
      expect(Array.from(got.data as Float32Array)).toEqual(Array.from((t as { data: Float32Array }).data));
    }
    expect(ck.weights.get('counts')!.dtype).toBe('int32');
    expect(ck.optimizer!.paramSteps).toEqual({ 'hypernet.mh_fc.0.weight': 5 });
    expect(Array.from(ck.optimizer!.moments['hypernet.mh_fc.0.weight.exp_avg']!.data as Float32Array)).toEqual(Array.from(new Float32Array([0.5, -0.5, 0, 1e-3, 2, 3])));
    expect(ck.state.rng.noise).toEqual(c.rng!.noise);
    expect(Rng.fromState(ck.state.rng.noise!).nextNormal()).toBe(Rng.fromState(c.rng!.noise!).nextNormal());
    expect(ck.state).toMatchObject({ data: c.data, config: c.config, metrics: c.metrics, extra: c.extra, format: 'aptp-checkpoint', version: 1 });
  });

  it('accepts tfjs tensors and refuses non-finite weights without touching the folder', () => {
    const w = tf.tensor([1, 2, 3], [3]);
    saveCheckpoint(root, { step: 1, weights: { w } });
    const bad = tf.tensor([1, NaN, 3], [3]);
    expect(() => saveCheckpoint(root, { step: 2, weights: { w: bad } })).toThrow(NumericError);
    expect(() => saveCheckpoint(root, { step: 2, weights: { w: bad } })).toThrow(/^w: non-finite weight, refusing to write a checkpoint: expected finite values, found NaN at flat index 1$/);
    const c = content(3);
    (c.optimizer!.moments['hypernet.mh_fc.0.weight.exp_avg_sq']!.data as Float32Array)[2] = Infinity;
    expect(() => saveCheckpoint(root, c)).toThrow(/exp_avg_sq: non-finite optimizer moment/);
    expect(fs.readdirSync(root).sort()).toEqual(['checkpoint-1', 'latest']);
    expect(latest(root)).toBe('checkpoint-1');
    tf.dispose([w, bad]);
  });

  it('keeps the last N and removes checkpoints of an abandoned later timeline', () => {
    for (const s of [2, 4, 6, 8]) saveCheckpoint(root, content(s), { keepLast: 3 });
    expect(listCheckpoints(root).map((c) => c.step)).toEqual([8, 6, 4]);
    saveCheckpoint(root, content(8), { keepLast: 3 }); // re-saving a step replaces it
    expect(listCheckpoints(root).map((c) => c.step)).toEqual([8, 6, 4]);
    saveCheckpoint(root, content(5), { keepLast: 2 }); // resumed from 4, saved 5: 6 and 8 are stale
    expect(listCheckpoints(root).map((c) => c.step)).toEqual([5, 4]);
    expect(latest(root)).toBe('checkpoint-5');
  });

  it('a half-written temp folder of a killed save is ignored by the loader and removed by the next save', () => {
    saveCheckpoint(root, content(5));
    // kill -9 in the middle of saving step 10: temp folder with a partial weights file, no state.json, latest untouched
    const partial = path.join(root, '.checkpoint-10.tmp-4242-deadbeef');
    fs.mkdirSync(partial);
    fs.writeFileSync(path.join(partial, 'weights.safetensors'), Buffer.alloc(37, 1));
    const found = findLatestCheckpoint(root)!;
    expect(found).toMatchObject({ dir: path.join(root, 'checkpoint-5'), step: 5, fellBack: false });
    saveCheckpoint(root, content(6));
    expect(fs.existsSync(partial)).toBe(false);
  });

  it('a complete checkpoint whose latest update was lost is not used: latest is authoritative', () => {
    saveCheckpoint(root, content(5));
    saveCheckpoint(root, content(10));
    fs.writeFileSync(path.join(root, LATEST_POINTER), 'checkpoint-5\n'); // killed between the rename and the pointer update
    expect(findLatestCheckpoint(root)).toMatchObject({ step: 5, fellBack: false });
  });

  it('falls back to the newest valid checkpoint when latest is truncated, corrupt or missing, and says why', () => {
    saveCheckpoint(root, content(5), { keepLast: 3 });
    saveCheckpoint(root, content(10), { keepLast: 3 });
    const weights10 = path.join(root, 'checkpoint-10', 'weights.safetensors');
    const full = fs.readFileSync(weights10);
    fs.truncateSync(weights10, full.length - 5);
    let found = findLatestCheckpoint(root)!;
    expect(found).toMatchObject({ dir: path.join(root, 'checkpoint-5'), step: 5, fellBack: true });
    expect(found.message).toBe(
      `latest → checkpoint-10 is invalid (${weights10}: file size differs from state.json (truncated?): expected ${full.length} bytes, found ${full.length - 5} bytes); falling back to checkpoint-5 (step 5)`,
    );
    expect(() => loadCheckpoint(path.join(root, 'checkpoint-10'))).toThrow(InputError);

    // same size, one flipped byte in the data: only the hash notices
    const flipped = Buffer.from(full);
    flipped[flipped.length - 1] ^= 0xff;
    fs.writeFileSync(weights10, flipped);
    expect(() => readCheckpointState(path.join(root, 'checkpoint-10'), { verify: 'quick' })).not.toThrow();
    found = findLatestCheckpoint(root)!;
    expect(found.step).toBe(5);
    expect(found.rejected[0]!.reason).toMatch(/weights\.safetensors: file content differs from state\.json \(corrupt\): expected sha256 [0-9a-f]{64}, found sha256/);

    fs.rmSync(path.join(root, LATEST_POINTER));
    found = findLatestCheckpoint(root)!;
    expect(found.message).toMatch(/^latest is missing; falling back to checkpoint-5 \(step 5\)$/);
    expect(found.rejected.map((r) => path.basename(r.dir))).toEqual(['checkpoint-10']);
  });

  it('reports a bad state.json naming the file and the field', () => {
    const dir = saveCheckpoint(root, content(5));
    const stateFile = path.join(dir, 'state.json');
    const state = JSON.parse(fs.readFileSync(stateFile, 'utf8'));
    fs.writeFileSync(stateFile, JSON.stringify({ ...state, rng: { noise: { s: [1, 2, 3], spare: null } } }));
    expect(() => readCheckpointState(dir)).toThrow(new RegExp(`^${stateFile.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: rng\\.noise\\.s: `));
    fs.writeFileSync(stateFile, JSON.stringify({ ...state, step: 6 }));
    expect(() => readCheckpointState(dir)).toThrow(/state\.json: step: step differs from the folder name: expected 5, found 6/);
    fs.writeFileSync(stateFile, JSON.stringify({ ...state, version: 2 }));
    expect(() => readCheckpointState(dir)).toThrow(/state\.json: version: /);
    fs.writeFileSync(stateFile, '{"format": "aptp-checkpoint", "step"');
    expect(() => readCheckpointState(dir)).toThrow(/state\.json: checkpoint state is not valid JSON/);
    fs.rmSync(stateFile);
    expect(() => readCheckpointState(dir)).toThrow(/state\.json: checkpoint has no state file/);
    fs.writeFileSync(stateFile, JSON.stringify(state));
    fs.rmSync(path.join(dir, 'optimizer.safetensors'));
    expect(() => readCheckpointState(dir)).toThrow(/optimizer\.safetensors: checkpoint file is missing/);
  });

  it('resolves --resume from a checkpoint folder or a run folder, and explains when there is nothing', () => {
    expect(() => resolveResume(root)).toThrow(/nothing to resume from: no valid checkpoint-<step> folder/);
    expect(() => resolveResume(path.join(root, 'nope'))).toThrow(/folder does not exist/);
    saveCheckpoint(root, content(3));
    saveCheckpoint(root, content(7));
    expect(resolveResume(root)).toMatchObject({ step: 7, fellBack: false });
    expect(resolveResume(path.join(root, 'checkpoint-3'))).toMatchObject({ step: 3, dir: path.join(root, 'checkpoint-3') });
  });
});
