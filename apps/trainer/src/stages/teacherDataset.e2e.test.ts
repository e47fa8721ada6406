import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import * as tf from '@tensorflow/tfjs-core';
import { Rng, runProgram } from '@aptp/core';
import { encodePng } from '@aptp/datasets';
import { loadUNet } from '@aptp/unet-gating';
import { openTrainingData } from '../loop/trainingData';
import { trainerProgram } from '../program';
import { readMetrics } from '../runDir';
import { dataRowKey, teacherBatchOf } from '../steps/teacherStep';
import { TINY_TEACHER_UNET } from '../steps/__fixtures__/tinyTeacher';
import { teacherImageSize, teacherLoaderSchema, teacherModel, teacherSchema } from './teacher';

/**
 * The teacher on a real data set (an image folder the test writes: PNGs of several sizes + JSONL captions + one
 * truncated PNG that must be skipped and counted), through the CLI on wasm: a 2-step run, resume 1 + 1 = 2 straight,
 * config errors naming the field, and the per-sample keyed randomness of loader batches.
 */

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

const CAPTIONS = ['a red square', 'a broken picture', 'two blue dots', 'a green ring on grey', 'the letter K in yellow', 'a white star'];
const SIZES: Array<[number, number]> = [[24, 20], [20, 20], [18, 30], [32, 24], [20, 26], [22, 22]]; // [width, height]

/** imageFolder data set: img0 … img5.png with captions; img1.png is truncated (its IEND chunk cut off). */
async function writeImageFolder(root: string): Promise<void> {
  fs.mkdirSync(root, { recursive: true });
  const lines: string[] = [];
  for (let i = 0; i < CAPTIONS.length; i++) {
    const [width, height] = SIZES[i]!;
    const rng = Rng.forKey(11, 'image', i);
    const data = new Uint8Array(width * height * 3);
    for (let p = 0; p < data.length; p++) data[p] = Math.floor(rng.nextDouble() * 256);
    const png = await encodePng({ width, height, data });
    fs.writeFileSync(path.join(root, `img${i}.png`), i === 1 ? png.subarray(0, Math.floor(png.length / 2)) : png);
    lines.push(JSON.stringify({ file: `img${i}.png`, caption: CAPTIONS[i] }));
  }
  fs.writeFileSync(path.join(root, 'captions.jsonl'), `${lines.join('\n')}\n`);
}

describe('aptp-trainer teacher on an image-folder data set', () => {
  let root: string;
  let images: string;
  let config: (name: string, extra?: Record<string, unknown>) => string;
  beforeAll(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'teacher-data-'));
    images = path.join(root, 'images');
    await writeImageFolder(images);
    config = (name, extra = {}) => {
      const file = path.join(root, name);
      const value = {
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
        dataset: { format: 'imageFolder', root: images, captions: 'captions.jsonl' },
        loader: { resolution: 16, shuffle: false },
        ...extra,
      };
      fs.writeFileSync(file, JSON.stringify(value));
      return file;
    };
  });
  afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

  it('loader defaults: the train transform at 16 px (the default teacher size), epochs and batch size not settable', () => {
    expect(teacherLoaderSchema.parse({})).toMatchObject({ transform: 'train', resolution: 16, seed: 43, shuffle: true });
    expect(teacherLoaderSchema.safeParse({ batchSize: 4 }).success).toBe(false);
    const args = teacherSchema.parse({ dataset: { format: 'imageFolder', root: images, captions: 'captions.jsonl' } });
    expect(args.dataset).toMatchObject({ format: 'imageFolder', imageField: 'file', captionField: 'caption' });
    // the synthetic default: the committed teacher's world
    expect(teacherSchema.parse({}).dataset).toEqual({ seed: 0, imageSize: 16, validationFraction: 0.1, backgroundWeights: { plain: 0.4, stripes: 0.15, checker: 0.15, gradient: 0.15, noise: 0.15 } });
    // the README's example config is valid
    const readme = fs.readFileSync(path.join(__dirname, '../../README.md'), 'utf8');
    const example = /\*\*Real data sets\.\*\*[\s\S]*?```json\n([\s\S]*?)```/.exec(readme)![1]!;
    const parsed = teacherSchema.parse(JSON.parse(example));
    expect(teacherModel(parsed).unetConfig.blockOutChannels).toEqual([32, 64, 64]);
    expect(teacherImageSize(parsed)).toEqual({ size: 32, field: 'loader.resolution' });
    const folder = { format: 'imageFolder', root: images, captions: 'captions.jsonl' };
    expect(teacherImageSize(teacherSchema.parse({ dataset: folder, loader: { transform: { resolution: 24, crop: 'center' } } }))).toEqual({ size: 24, field: 'loader.transform.resolution' });
    expect(teacherImageSize(teacherSchema.parse({ dataset: folder, loader: { transform: { resize: 'shorterSide', crop: 'none' } } }))).toBeNull(); // checked per batch
    expect(teacherImageSize(teacherSchema.parse({ dataset: { format: 'synthetic', imageSize: 16 }, loader: { transform: 'synthetic' } }))).toEqual({ size: 16, field: 'dataset.imageSize' });
  });

  it('loader batches: noise, timestep and dropout keyed by <epoch>:<id>, independent of the batch size', async () => {
    const loader = teacherLoaderSchema.parse({ resolution: 16, shuffle: false });
    const options = { seed: 3, captionDropout: 0.5, numTrainTimesteps: 1000 };
    const a = await openTrainingData({ format: 'imageFolder', root: images, captions: 'captions.jsonl' }, loader, { batchSize: 2 });
    const b = await openTrainingData({ format: 'imageFolder', root: images, captions: 'captions.jsonl' }, loader, { batchSize: 1 });
    try {
      const a0 = await a.next(0); // rows 0, (1 skipped), 2
      const b0 = await b.next(0);
      const b1 = await b.next(1);
      expect(a0.ids).toEqual(['img0.png', 'img2.png']);
      expect(a0.shape).toEqual([2, 3, 16, 16]);
      expect([b0.ids[0], b1.ids[0]]).toEqual(['img0.png', 'img2.png']);
      expect(a.skips()).toMatchObject({ total: 1, byReason: { truncatedImage: 1 } });
      expect(a.skips().examples[0]!.file).toMatch(/img1\.png$/);
      const bat = (x: typeof a0) => teacherBatchOf({ pixels: x.pixels, shape: x.shape, captions: x.captions, rows: x.ids.map((id) => dataRowKey(x.epoch, id)) }, options);
      const ta = bat(a0);
      const tb = bat(b1);
      try {
        expect(ta.rows).toEqual(['0:img0.png', '0:img2.png']);
        expect(tb.timesteps[0]).toBe(ta.timesteps[1]);
        expect(tb.prompts[0]).toBe(ta.prompts[1]);
        expect(Array.from(tb.noise.dataSync())).toEqual(Array.from(ta.noise.dataSync().subarray(3 * 256)));
        expect(Array.from(tb.x0.dataSync())).toEqual(Array.from(ta.x0.dataSync().subarray(3 * 256)));
        const rng = Rng.forKey(3, 'teacher', '0:img2.png');
        expect(ta.timesteps[1]).toBe(rng.nextInt(1000));
        expect(ta.prompts[1]).toBe(rng.nextDouble() < 0.5 ? '' : 'two blue dots');
        const x = ta.x0.dataSync();
        expect(Math.min(...x)).toBeGreaterThanOrEqual(-1);
        expect(Math.max(...x)).toBeLessThanOrEqual(1);
      } finally {
        tf.dispose([ta.x0, ta.noise, tb.x0, tb.noise]);
      }
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('a config error names the field and exits 2 without creating a run folder', async () => {
    const out = path.join(root, 'never');
    const noCaptions = await cli(['teacher', '--config', config('e1.json', { dataset: { format: 'imageFolder', root: images } }), '--out', out]);
    expect(noCaptions.code).toBe(2);
    expect(noCaptions.err).toMatch(/dataset: captions: /);
    const badFormat = await cli(['teacher', '--config', config('e2.json', { dataset: { format: 'imagefolder', root: images, captions: 'captions.jsonl' } }), '--out', out]);
    expect(badFormat.code).toBe(2);
    expect(badFormat.err).toMatch(/dataset: format: /);
    const loaderBatch = await cli(['teacher', '--config', config('e3.json', { loader: { batchSize: 4 } }), '--out', out]);
    expect(loaderBatch.code).toBe(2);
    expect(loaderBatch.err).toMatch(/loader: batchSize: unknown key/);
    const resolution = await cli(['teacher', '--config', config('e4.json', { loader: { resolution: 15 } }), '--out', out]);
    expect(resolution.code).toBe(2);
    expect(resolution.err).toMatch(/loader\.resolution: .*multiple of 2.*found 15/);
    const worldLoader = await cli(['teacher', '--config', config('e5.json', { dataset: { imageSize: 16 } }), '--out', out]);
    expect(worldLoader.code).toBe(2);
    expect(worldLoader.err).toMatch(/loader: loader applies to a dataset with a `format`/);
    expect(fs.existsSync(out)).toBe(false);
  });

  it('a 2-step run trains on the folder, skips and counts the broken image, and writes the model folder', async () => {
    const out = path.join(root, 'run2');
    const exportDir = path.join(root, 'teacher2');
    const r = await cli(['teacher', '--config', config('tiny.json'), '--steps', '2', '--out', out, '--export', exportDir]);
    expect(r.err).not.toMatch(/Error/);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^teacher: completed at step 2\/2/);
    expect(r.out).toMatch(/data: 1 skipped \(truncatedImage 1\); first: .*img1\.png \(truncatedImage\)/);
    expect(r.out).toContain("caption-reliance check not run: it uses the synthetic world's validation prompts (dataset format imageFolder)");
    const metrics = readMetrics(path.join(out, 'metrics.jsonl'));
    expect(metrics.map((m) => m.step)).toEqual([1, 2]);
    expect(metrics.every((m) => typeof m.loss === 'number' && Number.isFinite(m.loss) && m.loss > 0)).toBe(true);
    expect(metrics.map((m) => m.skippedImages)).toEqual([1, 1]);
    expect(metrics.map((m) => m.epoch)).toEqual([0, 0]);
    const state = JSON.parse(fs.readFileSync(path.join(out, 'checkpoint-2', 'state.json'), 'utf8'));
    expect(state.data).toMatchObject({ epoch: 0, position: 5, batches: 2, samples: 4, skips: { total: 1 } }); // rows 0–4 read, 1 skipped
    expect(state.config.loader).toMatchObject({ resolution: 16, shuffle: false, transform: 'train', seed: 43 });
    const prov = JSON.parse(fs.readFileSync(path.join(exportDir, 'provenance.json'), 'utf8'));
    expect(prov).toMatchObject({ status: 'completed', stepsDone: 2, what: 'teacher UNet of the imageFolder data set (aptp-trainer teacher)' });
    expect(prov.data).toMatchObject({ format: 'imageFolder', samplesSeen: 4, skipped: { total: 1, byReason: { truncatedImage: 1 } } });
    expect(prov.captionReliance.skipped).toMatch(/synthetic world/);
    const unet = await loadUNet(path.join(exportDir, 'unet'));
    const y = tf.tidy(() => unet.forward({ sample: tf.zeros([1, 3, 16, 16]), timestep: 500, encoderHiddenStates: tf.zeros([1, 8, 8]) }).sample);
    expect(y.dataSync().every(Number.isFinite)).toBe(true);
    y.dispose();
    unet.dispose();
  });

  it('1 step + --resume to 2 gives the same losses, skip counts and exported weights as 2 straight steps', async () => {
    const cfg = config('shuffled.json', { loader: { resolution: 16, seed: 5 } }); // shuffled order
    const straight = await cli(['teacher', '--config', cfg, '--steps', '2', '--out', path.join(root, 'straight'), '--export', path.join(root, 'straight-teacher')]);
    expect(straight.code).toBe(0);
    const part = await cli(['teacher', '--config', cfg, '--steps', '1', '--out', path.join(root, 'resumed')]);
    expect(part.code).toBe(0);
    const rest = await cli(['teacher', '--config', cfg, '--steps', '2', '--out', path.join(root, 'resumed'), '--resume', '--export', path.join(root, 'resumed-teacher')]);
    expect(rest.code).toBe(0);
    expect(rest.err).toContain('resuming from checkpoint-1 (step 1)');
    const pick = (dir: string) => readMetrics(path.join(root, dir, 'metrics.jsonl')).map((m) => [m.loss, m.meanTimestep, m.skippedImages]);
    expect(pick('resumed')).toEqual(pick('straight'));
    const a = fs.readFileSync(path.join(root, 'straight-teacher/unet/diffusion_pytorch_model.safetensors'));
    const b = fs.readFileSync(path.join(root, 'resumed-teacher/unet/diffusion_pytorch_model.safetensors'));
    expect(b.equals(a)).toBe(true);
    const provA = JSON.parse(fs.readFileSync(path.join(root, 'straight-teacher/provenance.json'), 'utf8'));
    const provB = JSON.parse(fs.readFileSync(path.join(root, 'resumed-teacher/provenance.json'), 'utf8'));
    expect(provB.data).toEqual(provA.data);
  });
});
