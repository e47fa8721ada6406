import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import * as tf from '@tensorflow/tfjs-core';
import { readSafetensors, runProgram, writeJsonAtomic, writeSafetensors } from '@aptp/core';
import { useBackend } from '@aptp/core/testing';
import { HashedTextConditioner, loadExpert, parseUNetConfig, randomUNetWeights, readPrunedUNet } from '@aptp/unet-gating';
import { parsePruneConfig, type PruneConfigInput } from '../config/reference';
import { startRun } from '../loop/startRun';
import { trainerProgram } from '../program';
import { readMetrics } from '../runDir';
import { finetuneConfigFromArgs, type FinetuneCommandArgs } from '../commands/finetune';
import { runFinetune } from './finetune';
import { runPrune } from './prune';
import { readRouting } from './route';

/**
 * prune → route → finetune on the synthetic world at a tiny size (16 px, a 2-level pixel UNet, K = 2), on wasm.
 * The teacher is random (built in a temp dir): these tests check the pipeline's mechanics, not image quality.
 */
const UNET = {
  _class_name: 'UNet2DConditionModel',
  sample_size: 16,
  in_channels: 3,
  out_channels: 3,
  block_out_channels: [8, 16],
  down_block_types: ['DownBlock2D', 'CrossAttnDownBlock2D'],
  mid_block_type: 'UNetMidBlock2DCrossAttn',
  up_block_types: ['CrossAttnUpBlock2D', 'UpBlock2D'],
  layers_per_block: 2,
  attention_head_dim: [1, 2],
  cross_attention_dim: 8,
  norm_num_groups: 4,
  use_linear_projection: true,
  gated_ff: true,
  ff_gate_width: 4,
};

function sink(): { stream: Writable; text: () => string } {
  let buf = '';
  return { stream: new Writable({ write(c, _e, cb) { buf += c.toString(); cb(); } }), text: () => buf };
}

function makeTeacher(dir: string): void {
  fs.mkdirSync(path.join(dir, 'unet'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'scheduler'), { recursive: true });
  writeJsonAtomic(path.join(dir, 'unet/config.json'), UNET);
  const cfg = parseUNetConfig(UNET);
  writeSafetensors(path.join(dir, 'unet/diffusion_pytorch_model.safetensors'), Object.fromEntries(randomUNetWeights(cfg, 7)));
  writeJsonAtomic(path.join(dir, 'scheduler/scheduler_config.json'), { _class_name: 'DDIMScheduler', num_train_timesteps: 1000, beta_schedule: 'squaredcos_cap_v2', prediction_type: 'v_prediction' });
  new HashedTextConditioner({ dim: 8, sequenceLength: 6 }).save(dir);
}

function pruneConfig(teacher: string, overrides: { steps?: number; pretrain?: number; lr?: number; baseline?: string } = {}): PruneConfigInput {
  const lr = overrides.lr ?? 2e-3;
  return {
    seed: 5,
    data: { dataset: { format: 'synthetic', imageSize: 16, numSamples: 40 }, loader: { transform: 'synthetic', seed: 3 } },
    model: { pretrainedModelNameOrPath: teacher, promptEncoder: { type: 'synthetic', dim: 16, seed: 0 }, router: { inputDim: 16, numCodes: 2 } },
    training: {
      trainBatchSize: 4,
      maxTrainSteps: overrides.steps ?? 4,
      hypernetPretrainingSteps: overrides.pretrain ?? 2,
      optim: { hypernetLearningRate: lr, quantizerLearningRate: lr, scaleLr: false, lrWarmupSteps: 0 },
      logging: { checkpointingSteps: 2 },
    },
    ...(overrides.baseline ? { baseline: overrides.baseline as 'none' } : {}),
  };
}

describe('APTP pipeline on the synthetic world (tiny, wasm)', () => {
  let tmp: string;
  let teacher: string;
  beforeAll(async () => {
    await useBackend('wasm');
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'aptp-e2e-'));
    teacher = path.join(tmp, 'teacher');
    makeTeacher(teacher);
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  const cli = async (argv: string[]): Promise<{ code: number; out: string; err: string }> => {
    const out = sink();
    const err = sink();
    const code = await runProgram(trainerProgram, argv, { out: out.stream, err: err.stream });
    return { code, out: out.text(), err: err.text() };
  };

  it('prune → route → finetune runs end to end through the CLI', async () => {
    const cfgFile = path.join(tmp, 'prune.json');
    fs.writeFileSync(cfgFile, JSON.stringify(pruneConfig(teacher)));
    const pruneDir = path.join(tmp, 'prune');
    const p = await cli(['prune', '--config', cfgFile, '--out', pruneDir, '--backend', 'wasm']);
    expect(p.err).not.toMatch(/Error/);
    expect(p.code).toBe(0);
    expect(p.out).toContain('code 1: MACs');
    const metrics = readMetrics(path.join(pruneDir, 'metrics.jsonl'));
    expect(metrics.map((m) => m.step)).toEqual([1, 2, 3, 4]);
    for (const m of metrics) {
      for (const k of ['loss', 'diffusion', 'resource', 'contrastive', 'distillation', 'block', 'std', 'max', 'resourceRatioMean', 'resourceRatioStd', 'resourceRatioMax']) expect(Number.isFinite(m[k])).toBe(true);
      expect((m.codeUsage as number[]).reduce((a, b) => a + b, 0)).toBe(4);
    }
    expect(metrics.map((m) => m.mainPhase)).toEqual([0, 0, 1, 1]);
    expect(fs.existsSync(path.join(pruneDir, 'router/config.json'))).toBe(true);

    const r = await cli(['route', '--prune', pruneDir, '--backend', 'wasm']);
    expect(r.code).toBe(0);
    const mapping = JSON.parse(fs.readFileSync(path.join(pruneDir, 'routing-train.json'), 'utf8')) as { expert: number[]; counts: number[] };
    expect(mapping.expert).toHaveLength(40);
    expect(mapping.counts.reduce((a, b) => a + b, 0)).toBe(40);
    expect(r.out).toMatch(/expert 0: +\d+ prompts/);
    const rb = await cli(['route', '--prune', pruneDir, '--mode', 'balanced', '--out', path.join(tmp, 'balanced.json'), '--backend', 'wasm']);
    expect(rb.code).toBe(0);
    const balanced = JSON.parse(fs.readFileSync(path.join(tmp, 'balanced.json'), 'utf8')) as { counts: number[] };
    expect(balanced.counts).toEqual([20, 20]);

    // Fine-tune the most used expert for 2 steps.
    const k = mapping.counts[0]! >= mapping.counts[1]! ? 0 : 1;
    const ftDir = path.join(tmp, 'finetune');
    const f = await cli(['finetune', '--prune', pruneDir, '--expert', String(k), '--steps', '2', '--batch-size', '2', '--out', ftDir, '--backend', 'wasm']);
    expect(f.err).not.toMatch(/Error/);
    expect(f.code).toBe(0);
    const expertDir = path.join(ftDir, `expert-${k}`, 'unet');
    const folder = readPrunedUNet(expertDir);
    const experts = JSON.parse(fs.readFileSync(path.join(pruneDir, 'experts.json'), 'utf8')) as { experts: Array<{ archVector: number[] }> };
    expect(Array.from(folder.plan.archVector)).toEqual(experts.experts[k]!.archVector);
    const ftMetrics = readMetrics(path.join(ftDir, `expert-${k}`, 'metrics.jsonl'));
    expect(ftMetrics).toHaveLength(2);
    for (const m of ftMetrics) for (const key of ['loss', 'diffusion', 'distillation', 'block']) expect(Number.isFinite(m[key])).toBe(true);
    // The fine-tuned expert loads and runs; its weights moved away from the teacher's slices.
    const unet = await loadExpert(expertDir);
    const out = tf.tidy(() => unet.forward({ sample: tf.zeros([1, 3, 16, 16]), timestep: 10, encoderHiddenStates: tf.zeros([1, 6, 8]) }).sample);
    expect(out.shape).toEqual([1, 3, 16, 16]);
    expect(Array.from(out.dataSync()).every(Number.isFinite)).toBe(true);
    out.dispose();
    unet.dispose();
    const tuned = readSafetensors(path.join(expertDir, 'diffusion_pytorch_model.safetensors'));
    const base = readSafetensors(path.join(teacher, 'unet/diffusion_pytorch_model.safetensors'));
    const key = 'conv_out.weight';
    const diff = Math.max(...Array.from(tuned.get(key)!.data as Float32Array, (v, i) => Math.abs(v - (base.get(key)!.data as Float32Array)[i]!)));
    expect(diff).toBeGreaterThan(0);

    // The fine-tuning loop keeps numTensors flat (after its first step creates the AdamW moments).
    const ftConfig = finetuneConfigFromArgs({ prune: pruneDir, expert: String(k), steps: 4, batchSize: 2 } as FinetuneCommandArgs, teacher);
    const s = startRun({ name: 'ft', out: path.join(tmp, 'ft-leak'), config: ftConfig });
    const counts: number[] = [];
    const res = await runFinetune({ config: ftConfig, pruneRun: pruneDir, routing: readRouting(path.join(pruneDir, 'routing-train.json')), expert: k, run: s.run, onProgress: () => counts.push(tf.memory().numTensors) });
    s.run.close();
    expect(res.summary.status).toBe('completed');
    expect(counts.slice(1)).toEqual([counts[0], counts[0], counts[0]]);
  });

  it('a config error names the field (exit code 2)', async () => {
    const cfgFile = path.join(tmp, 'bad.json');
    const bad = pruneConfig(teacher) as Record<string, Record<string, unknown>>;
    bad.training!.losses = { resourceLoss: { pruningTarget: 1.7 } };
    fs.writeFileSync(cfgFile, JSON.stringify(bad));
    const r = await cli(['prune', '--config', cfgFile, '--out', path.join(tmp, 'bad-run'), '--backend', 'wasm']);
    expect(r.code).toBe(2);
    expect(r.err).toContain('training.losses.resourceLoss.pruningTarget');
  });

  it('resume = uninterrupted (losses and router), and numTensors stays flat across steps', async () => {
    const config = parsePruneConfig(pruneConfig(teacher, { steps: 5, pretrain: 2 }));
    const a = startRun({ name: 'a', out: path.join(tmp, 'run-a'), config });
    const counts: number[] = [];
    await runPrune({ config, run: a.run, onProgress: () => counts.push(tf.memory().numTensors) });
    a.run.close();
    // Flat within each phase; entering the main phase (step 3) adds exactly the codes' two AdamW moments (the codes get
    // their first gradient there, APTP.md §2.6).
    expect(counts).toHaveLength(5);
    expect(counts[1]).toBe(counts[0]);
    expect(counts[2]! - counts[1]!).toBe(2);
    expect(counts.slice(3)).toEqual([counts[2], counts[2]]);

    const bDir = path.join(tmp, 'run-b');
    const b1 = startRun({ name: 'b', out: bDir, config });
    const ctl = new AbortController();
    const first = await runPrune({ config, run: b1.run, signal: ctl.signal, onProgress: (p) => p.done === 3 && ctl.abort() });
    b1.run.close();
    expect(first.summary?.status).toBe('aborted');
    expect(first.routerDir).toBeNull();
    const b2 = startRun({ name: 'b', resume: bDir, config });
    expect(b2.checkpoint?.step).toBe(3);
    await runPrune({ config, run: b2.run, checkpoint: b2.checkpoint });
    b2.run.close();
    const la = readMetrics(path.join(tmp, 'run-a', 'metrics.jsonl'));
    const lb = readMetrics(path.join(bDir, 'metrics.jsonl'));
    expect(lb.map((m) => m.step)).toEqual([1, 2, 3, 4, 5]);
    expect(lb.map((m) => m.loss)).toEqual(la.map((m) => m.loss));
    expect(lb.map((m) => m.codeUsage)).toEqual(la.map((m) => m.codeUsage));
    const ra = readSafetensors(path.join(tmp, 'run-a', 'router/router.safetensors'));
    const rb = readSafetensors(path.join(bDir, 'router/router.safetensors'));
    for (const [k, v] of ra) expect(Array.from(rb.get(k)!.data as Float32Array)).toEqual(Array.from(v.data as Float32Array));
  });

  it('the resource ratio moves toward the target p\' in a short run', async () => {
    const config = parsePruneConfig(pruneConfig(teacher, { steps: 10, pretrain: 10, lr: 0.3 }));
    const s = startRun({ name: 'ratio', out: path.join(tmp, 'run-ratio'), config });
    const res = await runPrune({ config, run: s.run });
    s.run.close();
    const m = readMetrics(path.join(tmp, 'run-ratio', 'metrics.jsonl')).map((r) => r.resourceRatioMean as number);
    const gap = (r: number) => Math.abs(r - res.pPrime);
    expect(m[0]!).toBeGreaterThan(res.pPrime + 0.1); // gates start ≈ 1 (offset +3)
    const late = m.slice(-3).reduce((a, b) => a + b, 0) / 3;
    expect(gap(late)).toBeLessThan(0.6 * gap(m[0]!));
  });

  it('baselines: random (one architecture, no training) and singleArch (one code for every prompt)', async () => {
    const rnd = parsePruneConfig(pruneConfig(teacher, { baseline: 'random' }));
    const r1 = startRun({ name: 'rnd', out: path.join(tmp, 'run-rnd'), config: rnd });
    const a = await runPrune({ config: rnd, run: r1.run });
    r1.run.close();
    expect(a.summary).toBeNull();
    expect(a.experts).toHaveLength(1);
    expect(a.experts[0]!.keptWidth).toBeGreaterThan(0.3);
    expect(a.experts[0]!.keptWidth).toBeLessThanOrEqual(0.5);

    const single = parsePruneConfig(pruneConfig(teacher, { baseline: 'singleArch', steps: 2 }));
    const r2 = startRun({ name: 'single', out: path.join(tmp, 'run-single'), config: single });
    const b = await runPrune({ config: single, run: r2.run });
    r2.run.close();
    expect(b.experts).toHaveLength(1);
    const metrics = readMetrics(path.join(tmp, 'run-single', 'metrics.jsonl'));
    expect(metrics.every((m) => m.mainPhase === 0 && (m.codeUsage as number[])[0] === 4)).toBe(true);

    // the same training exported at a requested MACs ratio: experts.json records the match, the expert has that ratio
    const target = 0.7;
    const matched = parsePruneConfig({ ...pruneConfig(teacher, { baseline: 'singleArch', steps: 2 }), singleArchMacsRatio: target });
    const r3 = startRun({ name: 'single-matched', out: path.join(tmp, 'run-single-matched'), config: matched });
    const c = await runPrune({ config: matched, run: r3.run });
    r3.run.close();
    const info = JSON.parse(fs.readFileSync(path.join(tmp, 'run-single-matched', 'experts.json'), 'utf8')) as { macsMatch: { target: number; offset: number; macsRatio: number } };
    expect(info.macsMatch.target).toBe(target);
    expect(c.experts[0]!.macsRatio).toBeCloseTo(info.macsMatch.macsRatio, 12);
    expect(Math.abs(c.experts[0]!.macsRatio - target)).toBeLessThan(Math.abs(b.experts[0]!.macsRatio - target) + 1e-9);
    // only for the single-architecture baseline
    const wrong = parsePruneConfig({ ...pruneConfig(teacher, { steps: 2 }), singleArchMacsRatio: target });
    const r4 = startRun({ name: 'wrong', out: path.join(tmp, 'run-wrong'), config: wrong });
    await expect(runPrune({ config: wrong, run: r4.run })).rejects.toThrow(/singleArchMacsRatio/);
    r4.run.close();
  });
});
