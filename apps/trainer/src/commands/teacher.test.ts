import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import * as tf from '@tensorflow/tfjs-core';
import { DDIMScheduler, readSafetensors, readSchedulerConfigFile, runProgram, writeSafetensors } from '@aptp/core';
import { HashedTextConditioner, loadUNet } from '@aptp/unet-gating';
import { trainerProgram } from '../program';
import { readMetrics } from '../runDir';
import { checkWorld, checkWorldConfig, DEFAULT_TEACHER_UNET, teacherSchema } from '../stages/teacher';
import { TINY_TEACHER_UNET } from '../steps/__fixtures__/tinyTeacher';
import { teacherBatch } from '../steps/teacherStep';

function sink(): { stream: Writable; text: () => string } {
  let buf = '';
  return { stream: new Writable({ write(c, _e, cb) { buf += c.toString(); cb(); } }), text: () => buf };
}

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const o = sink();
  const e = sink();
  const code = await runProgram(trainerProgram, args, { out: o.stream, err: e.stream });
  return { code, out: o.text(), err: e.text() };
}

const TINY = {
  seed: 1,
  batchSize: 2,
  learningRate: 0.003,
  lrScheduler: 'constant',
  lrWarmupSteps: 0,
  emaDecay: 0.9,
  saveEvery: 1,
  checkSamples: 2,
  backend: 'wasm',
  unet: TINY_TEACHER_UNET,
  conditioning: { sequenceLength: 8 },
  dataset: { imageSize: 16 },
};

describe('aptp-trainer teacher', () => {
  let root: string;
  beforeAll(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'teacher-cmd-'));
  });
  afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

  const writeConfig = (name: string, value: unknown): string => {
    const file = path.join(root, name);
    fs.writeFileSync(file, JSON.stringify(value));
    return file;
  };

  it('--help lists the options with their defaults', async () => {
    const r = await cli(['teacher', '--help']);
    expect(r.code).toBe(0);
    for (const flag of ['--steps', '--batch-size', '--resume', '--export', '--caption-dropout', '--snr-gamma', '--ema-decay', '--workers', '--config']) expect(r.out).toContain(flag);
    expect(r.out).toMatch(/--steps <n> +optimizer steps .*\(default: 2700\)/);
  });

  it('the committed config file is valid and describes the default UNet', () => {
    const file = path.join(__dirname, '../../configs/teacher.synthetic.json');
    const parsed = teacherSchema.parse(JSON.parse(fs.readFileSync(file, 'utf8')));
    expect(parsed.unet).toEqual(DEFAULT_TEACHER_UNET);
    // the command with no flags reproduces the committed teacher: every default equals the committed config
    expect(parsed).toEqual(teacherSchema.parse({}));
  });

  it('a config error names the field and exits 2 without creating a run folder', async () => {
    const out = path.join(root, 'never');
    const unknown = await cli(['teacher', '--config', writeConfig('unknown.json', { ...TINY, stepz: 3 }), '--out', out]);
    expect(unknown.code).toBe(2);
    expect(unknown.err).toContain('stepz');
    const badUnet = await cli(['teacher', '--config', writeConfig('bad-unet.json', { ...TINY, unet: { ...TINY_TEACHER_UNET, norm_num_groups: 3 } }), '--out', out]);
    expect(badUnet.code).toBe(2);
    expect(badUnet.err).toMatch(/unet: norm_num_groups: .*found 3/);
    const badFlag = await cli(['teacher', '--config', writeConfig('ok.json', TINY), '--batch-size', '0', '--out', out]);
    expect(badFlag.code).toBe(2);
    expect(badFlag.err).toMatch(/batchSize|batch-size/);
    const rgb = await cli(['teacher', '--config', writeConfig('latent.json', { ...TINY, unet: { ...TINY_TEACHER_UNET, in_channels: 4, out_channels: 4 } }), '--out', out]);
    expect(rgb.code).toBe(2);
    expect(rgb.err).toContain('unet.in_channels/out_channels');
    const badMix = await cli(['teacher', '--config', writeConfig('mix.json', { ...TINY, dataset: { imageSize: 16, sizeWeights: { small: 1, medium: 1, large: -1 } } }), '--out', out]);
    expect(badMix.code).toBe(2);
    expect(badMix.err).toMatch(/dataset.*sizeWeights.*large/);
    expect(fs.existsSync(out)).toBe(false);
  });

  it('the built-in world takes a training mix (category and size weights); absent, the config is unchanged', () => {
    const mix = { categoryWeights: { shape: 0.5, count: 0.15, relation: 0.2, text: 0.15 }, sizeWeights: { small: 0.15, medium: 0.15, large: 0.7 } };
    const defaults = teacherSchema.parse({}).dataset;
    expect(Object.keys(defaults).sort()).toEqual(['backgroundWeights', 'imageSize', 'seed', 'validationFraction']);
    expect(teacherSchema.parse({ dataset: { imageSize: 16, ...mix } }).dataset).toEqual({ ...defaults, ...mix });
    // the caption-reliance check reads the default world's validation prompts whatever the training mix
    const check = checkWorld(teacherSchema.parse({ dataset: { imageSize: 16, ...mix } }).dataset)!;
    const plain = checkWorld(defaults)!;
    for (let i = 0; i < 20; i++) expect(check.prompt('validation', i)).toEqual(plain.prompt('validation', i));
    // the same for a `format: synthetic` data set (teacher-check reads a teacher's world this way)
    const loaderWorld = teacherSchema.parse({ dataset: { format: 'synthetic', imageSize: 16, ...mix }, loader: { transform: 'synthetic' } }).dataset;
    expect(loaderWorld).toMatchObject(mix);
    expect(checkWorldConfig(loaderWorld)).toMatchObject({ format: 'synthetic', imageSize: 16 });
    expect(checkWorldConfig(loaderWorld)).not.toHaveProperty('categoryWeights');
    expect(checkWorldConfig(loaderWorld)).not.toHaveProperty('sizeWeights');
  });

  it('a 2-step run writes a loadable model folder (UNet, scheduler, conditioner, metrics, provenance)', async () => {
    const out = path.join(root, 'run2');
    const exportDir = path.join(root, 'teacher2');
    const r = await cli(['teacher', '--config', writeConfig('tiny.json', TINY), '--steps', '2', '--out', out, '--export', exportDir]);
    expect(r.err).not.toMatch(/Error/);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^teacher: completed at step 2\/2/);
    expect(r.out).toContain(`teacher model folder: ${exportDir}`);
    const unet = await loadUNet(path.join(exportDir, 'unet'));
    const cond = HashedTextConditioner.load(exportDir);
    expect(cond.dim).toBe(8);
    const sched = DDIMScheduler.fromJson(readSchedulerConfigFile(path.join(exportDir, 'scheduler')).raw);
    expect(sched.config.predictionType).toBe('sample');
    expect(sched.config.betaSchedule).toBe('squaredcos_cap_v2');
    sched.setTimesteps(4);
    expect(sched.timesteps).toEqual([999, 749, 499, 249]);
    const c = cond.encodeSync(['a red circle', '']);
    const y = tf.tidy(() => unet.forward({ sample: tf.zeros([2, 3, 16, 16]), timestep: 999, encoderHiddenStates: c }).sample);
    expect(y.shape).toEqual([2, 3, 16, 16]);
    expect(y.dataSync().every(Number.isFinite)).toBe(true);
    tf.dispose([c, y]);
    unet.dispose();
    const prov = JSON.parse(fs.readFileSync(path.join(exportDir, 'provenance.json'), 'utf8'));
    expect(prov).toMatchObject({ status: 'completed', stepsDone: 2, stepsPlanned: 2, seed: 1, backend: 'wasm', exportedWeights: 'EMA (decay 0.9)' });
    expect(prov.captionReliance.samples).toBe(2);
    expect(prov.captionReliance.meanSquaredError.map((r: { t: number }) => r.t)).toEqual([300, 600, 900]);
    expect(prov.captionReliance.meanSquaredError.every((r: { true: number; wrong: number }) => r.true > 0 && r.wrong > 0)).toBe(true);
    expect(readMetrics(path.join(exportDir, 'metrics.jsonl')).map((m) => m.step)).toEqual([1, 2]);
    expect(JSON.parse(fs.readFileSync(path.join(exportDir, 'unet/config.json'), 'utf8'))).toMatchObject({ _class_name: 'UNet2DConditionModel', block_out_channels: [8, 16] });
  });

  it('--init starts from a teacher folder\'s weights (checked against this run\'s UNet and conditioner)', async () => {
    const cfg = writeConfig('tiny-init.json', TINY);
    const base = path.join(root, 'init-base');
    expect((await cli(['teacher', '--config', cfg, '--steps', '2', '--out', path.join(root, 'init-base-run'), '--export', base])).code).toBe(0);
    // an lr far below float16 resolution: the exported (EMA) weights are the init weights, byte for byte
    const phase = path.join(root, 'init-phase');
    const r = await cli(['teacher', '--config', cfg, '--init', base, '--steps', '1', '--learning-rate', '1e-12', '--out', path.join(root, 'init-phase-run'), '--export', phase]);
    expect(r.err).not.toMatch(/Error/);
    expect(r.code).toBe(0);
    const weights = (dir: string) => fs.readFileSync(path.join(dir, 'unet/diffusion_pytorch_model.safetensors'));
    expect(weights(phase).equals(weights(base))).toBe(true);
    const fresh = path.join(root, 'init-fresh');
    expect((await cli(['teacher', '--config', cfg, '--steps', '1', '--learning-rate', '1e-12', '--out', path.join(root, 'init-fresh-run'), '--export', fresh])).code).toBe(0);
    expect(weights(fresh).equals(weights(base))).toBe(false);
    const prov = JSON.parse(fs.readFileSync(path.join(phase, 'provenance.json'), 'utf8'));
    expect(prov.init).toEqual({ dir: base, sha256: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(prov.config.init).toBe(base);
    expect(JSON.parse(fs.readFileSync(path.join(fresh, 'provenance.json'), 'utf8'))).not.toHaveProperty('init');
    // errors name `init` and what differs; no run folder is left behind
    const other = await cli(['teacher', '--config', writeConfig('init-other.json', { ...TINY, conditioning: { sequenceLength: 10 } }), '--init', base, '--steps', '1', '--out', path.join(root, 'init-bad')]);
    expect(other.code).toBe(2);
    expect(other.err).toMatch(/init.*sequenceLength 10.*found 8/s);
    const missing = await cli(['teacher', '--config', cfg, '--init', path.join(root, 'nowhere'), '--steps', '1', '--out', path.join(root, 'init-bad')]);
    expect(missing.code).toBe(2);
    expect(missing.err).toMatch(/nowhere\/unet\/config\.json: init: not a teacher model folder/);
    expect(fs.existsSync(path.join(root, 'init-bad'))).toBe(false);
    // a weights file that does not fit its config: the UNet builder names the file and the tensor
    const broken = path.join(root, 'init-broken');
    fs.cpSync(base, broken, { recursive: true });
    const file = path.join(broken, 'unet/diffusion_pytorch_model.safetensors');
    const kept = [...readSafetensors(file)].filter(([k]) => k !== 'conv_out.bias');
    writeSafetensors(file, Object.fromEntries(kept));
    const torn = await cli(['teacher', '--config', cfg, '--init', broken, '--steps', '1', '--out', path.join(root, 'init-torn')]);
    expect(torn.code).not.toBe(0);
    expect(torn.err).toMatch(/init-broken\/unet\/diffusion_pytorch_model\.safetensors: conv_out\.bias: missing weight/);
  });

  it('dataset.firstRow shifts the train rows a run reads (absent = 0) and is not part of the checked world', () => {
    const world = checkWorld(teacherSchema.parse({}).dataset)!;
    const o = { seed: 3, batchSize: 2, captionDropout: 0.1, numTrainTimesteps: 1000 };
    const [later, shifted] = [teacherBatch(world, o, 1), teacherBatch(world, o, 0, 2)];
    expect(shifted.rows).toEqual([2, 3]);
    expect(shifted.rows).toEqual(later.rows);
    expect(shifted.prompts).toEqual(later.prompts);
    expect(shifted.x0.dataSync()).toEqual(later.x0.dataSync());
    tf.dispose([later.x0, later.noise, shifted.x0, shifted.noise]);
    const parsed = teacherSchema.parse({ dataset: { imageSize: 16, firstRow: 86400 } }).dataset;
    expect(parsed).toMatchObject({ firstRow: 86400 });
    expect(checkWorldConfig(parsed)).not.toHaveProperty('firstRow');
    expect(() => teacherSchema.parse({ dataset: { firstRow: -1 } })).toThrow(/firstRow/);
  });

  it('2 steps + --resume to 4 gives the same losses and the same exported weights as 4 straight steps', async () => {
    const cfg = writeConfig('tiny4.json', TINY);
    const straight = await cli(['teacher', '--config', cfg, '--steps', '4', '--out', path.join(root, 'straight'), '--export', path.join(root, 'straight-teacher')]);
    expect(straight.code).toBe(0);
    const part = await cli(['teacher', '--config', cfg, '--steps', '2', '--out', path.join(root, 'resumed')]);
    expect(part.code).toBe(0);
    const rest = await cli(['teacher', '--config', cfg, '--steps', '4', '--out', path.join(root, 'resumed'), '--resume', '--export', path.join(root, 'resumed-teacher')]);
    expect(rest.code).toBe(0);
    expect(rest.err).toContain('resuming from checkpoint-2 (step 2)');
    const losses = (dir: string) => readMetrics(path.join(root, dir, 'metrics.jsonl')).map((m) => m.loss);
    expect(losses('resumed')).toEqual(losses('straight'));
    const a = fs.readFileSync(path.join(root, 'straight-teacher/unet/diffusion_pytorch_model.safetensors'));
    const b = fs.readFileSync(path.join(root, 'resumed-teacher/unet/diffusion_pytorch_model.safetensors'));
    expect(b.equals(a)).toBe(true);
    const prov = JSON.parse(fs.readFileSync(path.join(root, 'resumed-teacher/provenance.json'), 'utf8'));
    expect(prov.stepsDone).toBe(4);
    expect(prov.workers).toBe(2); // the default: each step's batch split across this thread and one worker thread
    // one thread computes the same steps; only the order of float additions differs
    const single = await cli(['teacher', '--config', cfg, '--steps', '4', '--workers', '1', '--out', path.join(root, 'single')]);
    expect(single.code).toBe(0);
    const l1 = losses('single') as number[];
    (losses('straight') as number[]).forEach((l, i) => expect(Math.abs(l - l1[i]!)).toBeLessThan(1e-5 * Math.max(1, l1[i]!)));
    const numTensors = readMetrics(path.join(root, 'straight', 'metrics.jsonl')).map((m) => m.numTensors);
    expect(new Set(numTensors.slice(1)).size).toBe(1); // flat memory across data-parallel steps
  });
});
