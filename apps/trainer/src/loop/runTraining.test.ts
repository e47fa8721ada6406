import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { NumericError } from '@aptp/core';
import { describeBackends, expectNoTensorLeak } from '@aptp/core/testing';
import { loadCheckpoint, LATEST_POINTER, listCheckpoints, resolveResume } from '../checkpoint';
import { readMetrics, RunDir } from '../runDir';
import { formatSummary, runTraining, StepMetrics, TrainingProgress } from './runTraining';
import { ToyRegression } from './__fixtures__/toyRegression';

const tmpRoot = (): string => fs.mkdtempSync(path.join(os.tmpdir(), 'aptp-loop-'));
const losses = (dir: string): number[] => readMetrics(path.join(dir, 'metrics.jsonl')).map((r) => r.loss as number);
const latest = (dir: string): string => fs.readFileSync(path.join(dir, LATEST_POINTER), 'utf8').trim();

/** Resumes a run folder the way a stage's `--resume <dir>` does, with a freshly (differently) initialised model. */
async function resumeRun(dir: string, steps: number, saveEvery: number): Promise<{ toy: ToyRegression; summary: Awaited<ReturnType<typeof runTraining>> }> {
  const found = resolveResume(dir);
  const ckpt = loadCheckpoint(found.dir);
  const toy = new ToyRegression({ initSeed: 99, noiseSeed: 77 }); // everything but the data set is overwritten
  const run = RunDir.open(dir, { resumeStep: ckpt.step });
  try {
    const summary = await runTraining({ steps, saveEvery, step: toy.step, target: toy.target, run, resume: ckpt });
    return { toy, summary };
  } finally {
    run.close();
  }
}

describeBackends('runTraining', () => {
  let straight: { losses: number[]; weights: Record<string, number[]>; rows: unknown[]; dir: string };
  let root: string;

  beforeAll(async () => {
    root = tmpRoot();
    const toy = new ToyRegression();
    const run = RunDir.create({ root, name: 'straight', config: { steps: 10 } });
    const summary = await runTraining({ steps: 10, saveEvery: 5, step: toy.step, target: toy.target, run });
    run.close();
    expect(summary.status).toBe('completed');
    const records = readMetrics(run.metricsFile);
    straight = { losses: records.map((r) => r.loss as number), weights: toy.weightsSnapshot(), rows: records.map((r) => r.batchRows), dir: run.dir };
    toy.dispose();
  });

  afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

  it('learns (the toy loss falls) and checkpoints every saveEvery steps', () => {
    expect(straight.losses).toHaveLength(10);
    expect(Math.min(...straight.losses.slice(7))).toBeLessThan(straight.losses[0]!);
    expect(listCheckpoints(straight.dir).map((c) => c.step)).toEqual([10, 5]);
    expect(latest(straight.dir)).toBe('checkpoint-10');
    expect(fs.readdirSync(straight.dir).sort()).toEqual(['checkpoint-10', 'checkpoint-5', 'config.json', 'latest', 'metrics.jsonl', 'summary.json']);
    expect(JSON.parse(fs.readFileSync(path.join(straight.dir, 'config.json'), 'utf8'))).toEqual({ steps: 10 });
  });

  it('5 steps + abort + resume 5 gives the same losses and bit-identical weights as 10 straight steps', async () => {
    const controller = new AbortController();
    const toy = new ToyRegression();
    const run = RunDir.create({ root, name: 'interrupted' });
    const summary = await runTraining({
      steps: 10,
      saveEvery: 3,
      step: (i) => {
        const m = toy.step(i);
        if (i === 4) controller.abort(new Error('SIGTERM'));
        return m;
      },
      target: toy.target,
      run,
      signal: controller.signal,
    });
    run.close();
    toy.dispose();
    expect(summary.status).toBe('aborted');
    expect(summary.endStep).toBe(5);
    expect(latest(run.dir)).toBe('checkpoint-5');
    expect(listCheckpoints(run.dir).map((c) => c.step)).toEqual([5, 3]);
    expect(losses(run.dir)).toEqual(straight.losses.slice(0, 5));

    const resumed = await resumeRun(run.dir, 10, 3);
    expect(resumed.summary).toMatchObject({ status: 'completed', startStep: 5, endStep: 10, stepsRun: 5 });
    expect(losses(run.dir)).toEqual(straight.losses);
    expect(readMetrics(run.metricsFile).map((r) => r.batchRows)).toEqual(straight.rows);
    expect(resumed.toy.weightsSnapshot()).toEqual(straight.weights);
    resumed.toy.dispose();
  });

  it('after a crash (metrics written past the last checkpoint) resume drops the stale lines and matches exactly', async () => {
    const toy = new ToyRegression();
    const run = RunDir.create({ root, name: 'crashed' });
    await expect(
      runTraining({
        steps: 10,
        saveEvery: 3,
        step: (i) => {
          if (i === 7) throw new Error('simulated kill after step 7');
          return toy.step(i);
        },
        target: toy.target,
        run,
      }),
    ).rejects.toThrow(/simulated kill/);
    run.close();
    toy.dispose();
    expect(losses(run.dir)).toHaveLength(7); // steps 1..7 logged, checkpoint-6 is the latest
    fs.appendFileSync(run.metricsFile, '{"step": 8, "loss": 0.1'); // a torn line of a killed process
    expect(latest(run.dir)).toBe('checkpoint-6');
    const resumed = await resumeRun(run.dir, 10, 3);
    expect(readMetrics(run.metricsFile).map((r) => r.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(losses(run.dir)).toEqual(straight.losses);
    expect(resumed.toy.weightsSnapshot()).toEqual(straight.weights);
    resumed.toy.dispose();
  });

  it('stops on a NaN loss with a NumericError naming step and term, keeping the last good checkpoint', async () => {
    const toy = new ToyRegression({ nanAtStep: 6 });
    const run = RunDir.create({ root, name: 'nan' });
    let error: unknown;
    try {
      await runTraining({ steps: 10, saveEvery: 5, step: toy.step, target: toy.target, run });
    } catch (e) {
      error = e;
    }
    run.close();
    expect(error).toBeInstanceOf(NumericError);
    expect((error as Error).message).toBe('loss: non-finite loss at step 7; last good checkpoint checkpoint-5 kept: expected a finite number, found NaN');
    expect(Number.isNaN(toy.params['fc1.weight']!.dataSync()[0])).toBe(true); // the guard is what protects the checkpoint
    expect(latest(run.dir)).toBe('checkpoint-5');
    expect(listCheckpoints(run.dir).map((c) => c.step)).toEqual([5]);
    const records = readMetrics(run.metricsFile);
    expect(records.map((r) => r.step)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(records[6]!.loss).toBe('NaN');
    expect(JSON.parse(fs.readFileSync(path.join(run.dir, 'summary.json'), 'utf8'))).toMatchObject({ status: 'numeric-error', failedStep: 7, checkpoint: path.join(run.dir, 'checkpoint-5') });
    // the kept checkpoint is finite and loads
    const ck = loadCheckpoint(path.join(run.dir, 'checkpoint-5'));
    expect([...ck.weights.values()].every((t) => Array.from(t.data as Float32Array).every(Number.isFinite))).toBe(true);
    toy.dispose();
  });

  it('writes one metrics line per step with loss, lrs, grad norm; reports progress with it/s and ETA', async () => {
    const toy = new ToyRegression();
    const run = RunDir.create({ root, name: 'metrics' });
    const progress: TrainingProgress[] = [];
    let clock = 0;
    const summary = await runTraining({
      label: 'toy',
      steps: 4,
      saveEvery: 0,
      step: (i) => {
        clock += 500; // each step takes 0.5 s on the fake clock
        return { ...toy.step(i), resourceRatio: 0.5 + i / 10, codeUsage: [i, 4 - i] } as StepMetrics;
      },
      target: toy.target,
      run,
      onProgress: (p) => progress.push(p),
      progressKeys: ['resourceRatio'],
      now: () => clock,
    });
    run.close();
    const records = readMetrics(run.metricsFile);
    expect(records.map((r) => r.step)).toEqual([1, 2, 3, 4]);
    [0, 1 / 3, 2 / 3, 1].forEach((mult, k) => {
      // constant_with_warmup, 3 warm-up steps: the first step has lr 0
      expect(records[k]!['lr.hypernet']).toBeCloseTo(0.05 * mult, 15);
      expect(records[k]!['lr.quantizer']).toBeCloseTo(0.02 * mult, 15);
    });
    expect(records[3]).toMatchObject({ resourceRatio: 0.8, codeUsage: [3, 1], elapsedSec: 2 });
    for (const r of records) {
      expect(typeof r.loss).toBe('number');
      expect(r.gradNorm as number).toBeGreaterThan(0);
    }
    expect(progress.map((p) => p.done)).toEqual([1, 2, 3, 4]);
    expect(progress[3]!.info).toEqual({ loss: records[3]!.loss, resourceRatio: 0.8, 'it/s': 2, eta: '0.0s' });
    expect(progress[1]!.etaSec).toBeCloseTo(1, 9); // 2 steps left at 2 it/s
    expect(summary).toMatchObject({ status: 'completed', stepsRun: 4, elapsedSec: 2, itPerSec: 2, checkpoint: path.join(run.dir, 'checkpoint-4') });
    expect(summary.mean.resourceRatio).toBeCloseTo(0.65, 12);
    expect(formatSummary(summary)).toMatch(/^toy: completed at step 4\/4 \(4 steps in 2\.0s, 2\.00 it\/s\)\n {2}last: loss=\S+ resourceRatio=0\.8000\n[\s\S]*run folder: /);
    expect(JSON.parse(fs.readFileSync(path.join(run.dir, 'summary.json'), 'utf8')).endStep).toBe(4);
    toy.dispose();
  });

  it('keeps the number of live tensors flat across steps and checkpoints', async () => {
    const toy = new ToyRegression();
    await expectNoTensorLeak(() => void toy.step(0), { name: 'toy step', warmup: 1, steps: 3 });
    const run = RunDir.create({ root, name: 'memory' });
    const counts: number[] = [];
    await runTraining({
      steps: 8,
      saveEvery: 2,
      step: (i) => {
        counts.push(tf.memory().numTensors);
        return toy.step(i);
      },
      target: toy.target,
      run,
    });
    const after = tf.memory().numTensors;
    run.close();
    expect(new Set(counts).size).toBe(1);
    expect(after).toBe(counts[0]);
    // resuming (moments and weights replaced) does not change the count either
    const ck = loadCheckpoint(resolveResume(run.dir).dir);
    const before = tf.memory().numTensors;
    const run2 = RunDir.open(run.dir, { resumeStep: ck.step });
    await runTraining({ steps: 8, saveEvery: 2, step: toy.step, target: toy.target, run: run2, resume: ck });
    run2.close();
    expect(tf.memory().numTensors).toBe(before);
    toy.dispose();
  });
});
