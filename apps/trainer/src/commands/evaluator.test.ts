import * as fs from 'node:fs';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { Rng, runProgram } from '@aptp/core';
import { expectNoTensorLeak, useBackend, useTempDirs } from '@aptp/core/testing';
import { SyntheticWorld, type RgbImage } from '@aptp/datasets';
import { HEAD_NAMES, SyntheticAttributeClassifier, syntheticFeatureDistances, validateClassifier, type HeadName } from '@aptp/eval';
import { trainerProgram } from '../program';
import { evaluatorSchema, trainEvaluator } from './evaluator';

const tempDir = useTempDirs('aptp-evaluator-cmd-');

/** The committed evaluator (trained by `aptp-trainer evaluator`, see its provenance.json). */
const ASSET_DIR = path.resolve(__dirname, '../../assets/evaluator');

function sink(): { stream: Writable; text: () => string } {
  let buf = '';
  return { stream: new Writable({ write(c, _e, cb) { buf += c.toString(); cb(); } }), text: () => buf };
}

/**
 * Accuracy bars on held-out prompts of another world seed than the training one; the committed weights reach each
 * with a margin (their own numbers on 1000 validation samples are in provenance.json).
 */
const MIN_HEAD_ACCURACY: Record<HeadName, number> = {
  category: 0.97,
  shape: 0.82,
  color: 0.92,
  size: 0.93,
  position: 0.97,
  count: 0.9,
  relationAxis: 0.97,
  secondShape: 0.9,
  secondColor: 0.93,
  glyph: 0.92,
  secondGlyph: 0.88,
  backgroundPattern: 0.85,
  backgroundColor: 0.97,
};

describe('evaluator: the committed synthetic-world classifier', () => {
  // the world at the committed classifier's input size (the demo renders it at the teacher's size, the same)
  const imageSize = (JSON.parse(fs.readFileSync(path.join(ASSET_DIR, 'config.json'), 'utf8')) as { imageSize: number }).imageSize;
  const world = new SyntheticWorld({ seed: 4242, imageSize });
  const samples = Array.from({ length: 400 }, (_, i) => world.sample('validation', i));
  let classifier: SyntheticAttributeClassifier;

  beforeAll(async () => {
    await useBackend('wasm');
    classifier = SyntheticAttributeClassifier.load(ASSET_DIR);
  });
  afterAll(() => classifier?.dispose());

  it('is accurate on held-out prompts; adherence is high with the true prompts and low with shuffled ones', async () => {
    const v = await validateClassifier(classifier, samples, { seed: 1 });
    const report = Object.fromEntries(HEAD_NAMES.map((h) => [h, Math.round(v.headAccuracy[h].ratio * 1000) / 1000]));
    for (const h of HEAD_NAMES) {
      expect(v.headAccuracy[h].total).toBeGreaterThan(40);
      expect({ head: h, accuracy: report[h]!, atLeast: v.headAccuracy[h].ratio >= MIN_HEAD_ACCURACY[h] }).toEqual({ head: h, accuracy: report[h], atLeast: true });
    }
    expect(v.adherence.overall.ratio).toBeGreaterThan(0.7);
    for (const c of ['shape', 'count', 'relation', 'text'] as const) expect(v.adherence.perCategory[c].ratio).toBeGreaterThan(0.65);
    expect(v.shuffledAdherence.overall.ratio).toBeLessThan(0.03);
  });

  it('its features separate real images from degraded ones (FID / CMMD style)', async () => {
    const more = Array.from({ length: 600 }, (_, i) => world.sample('validation', 400 + i).image);
    const a = await classifier.features(samples.map((s) => s.image).concat(more.slice(0, 100))); // 500 real
    const real = more.slice(100); // 500 other real images (other prompts)
    const blur = (im: RgbImage): RgbImage => {
      const S = im.width;
      const d = new Uint8Array(im.data.length);
      for (let y = 0; y < S; y++)
        for (let x = 0; x < S; x++)
          for (let c = 0; c < 3; c++) {
            let sum = 0;
            let n = 0;
            for (let dy = -1; dy <= 1; dy++)
              for (let dx = -1; dx <= 1; dx++) {
                if (y + dy < 0 || x + dx < 0 || y + dy >= S || x + dx >= S) continue;
                sum += im.data[((y + dy) * S + x + dx) * 3 + c]!;
                n += 1;
              }
            d[(y * S + x) * 3 + c] = Math.round(sum / n);
          }
      return { ...im, data: d };
    };
    const rng = Rng.forKey(3, 'noise');
    const noisy = (sigma: number) => (im: RgbImage): RgbImage => ({ ...im, data: im.data.map((v) => Math.max(0, Math.min(255, Math.round(v + sigma * rng.nextNormal())))) });
    const same = await syntheticFeatureDistances(a, await classifier.features(real));
    const blurred = await syntheticFeatureDistances(a, await classifier.features(real.map(blur)));
    const noise10 = await syntheticFeatureDistances(a, await classifier.features(real.map(noisy(10))));
    const noise40 = await syntheticFeatureDistances(a, await classifier.features(real.map(noisy(40))));
    // both degradations are seen, and more noise is farther (a 3×3 blur is a strong change at 16 px, so blur and
    // noise are not ranked against each other)
    expect(same.fid).toBeGreaterThan(0);
    expect(blurred.fid).toBeGreaterThan(1.4 * same.fid);
    expect(blurred.cmmd).toBeGreaterThan(3 * same.cmmd);
    expect(noise10.fid).toBeGreaterThan(1.4 * same.fid);
    expect(noise40.fid).toBeGreaterThan(2 * noise10.fid);
    expect(noise10.cmmd).toBeGreaterThan(3 * same.cmmd);
    expect(noise40.cmmd).toBeGreaterThan(2 * noise10.cmmd);
  });

  it('records how it was made', () => {
    const prov = JSON.parse(fs.readFileSync(path.join(ASSET_DIR, 'provenance.json'), 'utf8')) as Record<string, unknown>;
    expect(prov.command).toMatch(/^aptp-trainer evaluator .*--seed \d+ --steps \d+/);
    expect(Object.keys(prov)).toEqual(expect.arrayContaining(['command', 'seed', 'data', 'training', 'metrics', 'date']));
    expect(Object.keys((prov.metrics as { headAccuracy: object }).headAccuracy).sort()).toEqual([...HEAD_NAMES].sort());
    expect(fs.statSync(path.join(ASSET_DIR, 'model.safetensors')).size).toBeLessThan(3_000_000);
  });
});

describe('evaluator command', () => {
  const tiny = ['--steps', '3', '--batch-size', '4', '--val-samples', '6', '--backend', 'wasm'];
  const run = async (dir: string, seed: number): Promise<{ code: number; out: string }> => {
    const o = sink();
    const e = sink();
    const code = await runProgram(trainerProgram, ['evaluator', '--out', dir, '--seed', String(seed), ...tiny], { out: o.stream, err: e.stream });
    return { code, out: o.text() + e.text() };
  };

  it('trains, validates and writes a loadable, deterministic folder with provenance', async () => {
    const root = tempDir();
    const [a, b, c] = ['a', 'b', 'c'].map((d) => path.join(root, d)) as [string, string, string];
    const ra = await run(a, 7);
    expect(ra.code).toBe(0);
    expect(ra.out).toMatch(/evaluator: 3\/3/);
    expect(ra.out).toMatch(/held-out accuracy: category \d+\.\d%/);
    expect(fs.readdirSync(a).sort()).toEqual(['config.json', 'model.safetensors', 'provenance.json']);
    const prov = JSON.parse(fs.readFileSync(path.join(a, 'provenance.json'), 'utf8'));
    expect(prov).toMatchObject({
      seed: 7,
      command: `aptp-trainer evaluator --out ${a} --seed 7 --steps 3 --batch-size 4 --learning-rate 0.002 --warmup-steps 100 --val-samples 6 --image-size 16 --backend wasm`,
      data: { world: { format: 'synthetic', seed: 7, imageSize: 16 }, train: { split: 'train', samples: 12 }, validation: { split: 'validation', samples: 6 } },
      training: { steps: 3, batchSize: 4, backend: 'wasm' },
    });
    expect(Number.isNaN(Date.parse(prov.date))).toBe(false);
    SyntheticAttributeClassifier.load(a).dispose();
    await run(b, 7);
    await run(c, 8);
    const bytes = (d: string) => fs.readFileSync(path.join(d, 'model.safetensors'));
    expect(bytes(b).equals(bytes(a))).toBe(true);
    expect(bytes(c).equals(bytes(a))).toBe(false);
  });

  it('rejects bad flags', async () => {
    const e = sink();
    expect(await runProgram(trainerProgram, ['evaluator', '--steps', '0'], { out: e.stream, err: e.stream })).toBe(2);
    expect(e.text()).toMatch(/--steps/);
  });

  it('its training loop leaks no tensors', async () => {
    await useBackend('wasm');
    const args = evaluatorSchema.parse({ steps: 2, batchSize: 2, valSamples: 2 });
    await expectNoTensorLeak(async () => (await trainEvaluator(args)).classifier.dispose(), { warmup: 1, steps: 1, name: 'trainEvaluator' });
  });
});
