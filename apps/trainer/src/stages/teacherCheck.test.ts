import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { DDPMScheduler, runProgram } from '@aptp/core';
import { useBackend } from '@aptp/core/testing';
import * as tf from '@tensorflow/tfjs-core';
import { SyntheticWorld, renderScene, type SyntheticAttributes } from '@aptp/datasets';
import { HashedTextConditioner, createEagerUNet, hostSource, parseUNetConfig } from '@aptp/unet-gating';
import { SyntheticAttributeClassifier, promptAdherence } from '@aptp/eval';
import { trainerProgram } from '../program';
import { TINY_TEACHER_UNET } from '../steps/__fixtures__/tinyTeacher';
import { initUNetWeights } from '../steps/trainableUNet';
import { rgbImagesToNchw } from '../steps/teacherStep';
import { captionReliance, promptSwap, promptSwapCases, type TeacherParts } from './teacherCheck';

const EVALUATOR = path.resolve(__dirname, '../../assets/evaluator');

const config = parseUNetConfig(TINY_TEACHER_UNET);
const world = new SyntheticWorld({ seed: 0, imageSize: 16 });
const conditioner = new HashedTextConditioner({ sequenceLength: 8, dim: 8 });
const scheduler = new DDPMScheduler({ betaSchedule: 'squaredcos_cap_v2', predictionType: 'v_prediction' });

function reliance(zeroText: boolean, batchSize: number) {
  const w = initUNetWeights(config, 3);
  if (zeroText) {
    // the text enters only through attn2.to_k/to_v and add_embedding: with to_v and the pooled projection zero, the
    // prediction cannot depend on it
    for (const [k, t] of w) if (/attn2\.to_v\.weight$|^add_embedding\.proj\./.test(k)) w.set(k, { ...t, data: new Float32Array(t.data.length) });
  }
  const unet = createEagerUNet(config, hostSource(w));
  try {
    return captionReliance({ unet, conditioner, scheduler }, world, { samples: 5, timesteps: [100, 800], batchSize });
  } finally {
    unet.dispose();
  }
}

describe('captionReliance', () => {
  beforeAll(async () => {
    await useBackend('wasm');
  });

  it('a model whose text path is cut has true = empty = wrong exactly; a random one does not', () => {
    for (const r of reliance(true, 16)) {
      expect(r.empty).toBe(r.true);
      expect(r.wrong).toBe(r.true);
      expect(r.relativeGap).toBe(0);
    }
    const rows = reliance(false, 16);
    expect(rows.map((r) => r.t)).toEqual([100, 800]);
    for (const r of rows) {
      expect(r.true).toBeGreaterThan(0);
      expect(Math.abs(r.wrong - r.true)).toBeGreaterThan(1e-6);
      expect(r.relativeGap).toBeCloseTo((r.wrong - r.true) / r.wrong, 12);
    }
  });

  it('does not depend on the forward batch size', () => {
    const a = reliance(false, 16);
    const b = reliance(false, 2);
    a.forEach((r, i) => {
      for (const k of ['true', 'empty', 'wrong'] as const) expect(Math.abs(r[k] - b[i]![k])).toBeLessThanOrEqual(1e-6 * r[k]);
    });
  });
});

describe('promptSwap', () => {
  beforeAll(async () => {
    await useBackend('wasm');
  });

  it('swaps exactly one attribute: another shape, or another colour that is not the background', () => {
    for (const attribute of ['shape', 'color'] as const) {
      const cases = promptSwapCases(world, attribute, 30, 4);
      expect(cases).toHaveLength(30);
      for (const c of cases) {
        expect(c.attributes.category).toBe('shape');
        expect(c.swappedValue).not.toBe(c.value);
        expect(c.swappedCaption).not.toBe(c.caption);
        const changed = structuredClone(c.attributes);
        if (attribute === 'shape') changed.objects[0]!.kind = c.swappedAttributes.objects[0]!.kind;
        else changed.objects[0]!.color = c.swappedAttributes.objects[0]!.color;
        expect(c.swappedAttributes).toEqual(changed);
        if (attribute === 'color') expect(c.swappedValue).not.toBe(c.attributes.background.color);
      }
      expect(new Set(cases.map((c) => c.swappedValue)).size).toBeGreaterThan(3); // spread over the other values
    }
  });

  /**
   * Two oracle "teachers": one ignores the text and returns the clean render behind x_t; one draws the scene its
   * prompt describes (whatever x_t shows). The check must tell them apart, and through an ε-prediction too.
   */
  it('reads an oracle that follows the word as following it and one that ignores it as ignoring it', async () => {
    const n = 24;
    const cases = promptSwapCases(world, 'shape', n, 0);
    const byCaption = new Map<string, SyntheticAttributes>();
    for (const c of cases) {
      byCaption.set(c.caption, c.attributes);
      byCaption.set(c.swappedCaption, c.swappedAttributes);
    }
    const clean = rgbImagesToNchw(cases.map((c) => c.image));
    let prompts: readonly string[] = [];
    const conditioner = { encodeSync: (p: readonly string[]) => ((prompts = p), tf.zeros([p.length, 2, 2]) as tf.Tensor3D) } as unknown as HashedTextConditioner;
    const oracle = (follow: boolean, predictionType: 'sample' | 'epsilon'): TeacherParts => {
      const sched = new DDPMScheduler({ betaSchedule: 'squaredcos_cap_v2', predictionType });
      const forward = ({ sample, timestep }: { sample: tf.Tensor; timestep: tf.Tensor1D }) => {
        const x0 = follow ? tf.tensor4d(rgbImagesToNchw(prompts.map((p) => renderScene(byCaption.get(p)!))).pixels, clean.shape) : tf.tensor4d(clean.pixels, clean.shape);
        if (predictionType === 'sample') return { sample: x0 };
        const a = sched.alphasCumprod[timestep.dataSync()[0]!]!;
        return { sample: tf.div(tf.sub(sample, tf.mul(x0, Math.sqrt(a))), Math.sqrt(1 - a)) };
      };
      return { unet: { forward } as unknown as TeacherParts['unet'], conditioner, scheduler: sched };
    };
    const classifier = SyntheticAttributeClassifier.load(EVALUATOR);
    try {
      const read = async (attrs: SyntheticAttributes[]) => (await classifier.predict(attrs.map(renderScene))).predictions.map((p) => p.labels.shape);
      const realReads = await read(cases.map((c) => c.attributes));
      const realAsTrue = realReads.filter((l, k) => l === cases[k]!.value).length / n;
      const realAsSwapped = realReads.filter((l, k) => l === cases[k]!.swappedValue).length / n;
      const swappedAsSwapped = (await read(cases.map((c) => c.swappedAttributes))).filter((l, k) => l === cases[k]!.swappedValue).length / n;
      expect(realAsTrue).toBeGreaterThan(0.6);

      const ignoring = await promptSwap(oracle(false, 'sample'), world, classifier, 'shape', { samples: n, timesteps: [300, 900] });
      expect(ignoring.map((r) => r.t)).toEqual([300, 900]);
      for (const r of ignoring) expect(r).toEqual({ attribute: 'shape', t: r.t, samples: n, trueAsTrue: realAsTrue, swappedAsSwapped: realAsSwapped, swappedAsTrue: realAsTrue, realAsTrue });

      for (const type of ['sample', 'epsilon'] as const) {
        const following = await promptSwap(oracle(true, type), world, classifier, 'shape', { samples: n, timesteps: [300, 900] });
        for (const r of following) {
          // the ε form goes through x̂0 = (x_t − √(1−ᾱ)·ε̂)/√ᾱ: equal up to a rounding of an 8-bit level
          expect(Math.abs(r.swappedAsSwapped - swappedAsSwapped)).toBeLessThanOrEqual(type === 'sample' ? 0 : 2 / n);
          expect(Math.abs(r.trueAsTrue - realAsTrue)).toBeLessThanOrEqual(type === 'sample' ? 0 : 2 / n);
          expect(r.swappedAsSwapped).toBeGreaterThan(0.6);
        }
      }
    } finally {
      classifier.dispose();
    }
  });
});

describe('aptp-trainer teacher-check', () => {
  const sink = () => {
    let buf = '';
    return { stream: new Writable({ write(c, _e, cb) { buf += c.toString(); cb(); } }), text: () => buf };
  };
  const cli = async (args: string[]) => {
    const o = sink();
    const e = sink();
    const code = await runProgram(trainerProgram, args, { out: o.stream, err: e.stream });
    return { code, out: o.text(), err: e.text() };
  };
  let root: string;
  beforeAll(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'teacher-check-'));
  });
  afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

  it('--help, a bad timestep named, and the table + JSON of a trained tiny teacher', async () => {
    expect((await cli(['teacher-check', '--help'])).out).toContain('--prompt-swap');
    const cfg = path.join(root, 'tiny.json');
    fs.writeFileSync(cfg, JSON.stringify({ seed: 1, batchSize: 2, saveEvery: 0, checkSamples: 0, backend: 'wasm', unet: TINY_TEACHER_UNET, conditioning: { sequenceLength: 8 }, dataset: { imageSize: 16 } }));
    const teacher = path.join(root, 'teacher');
    expect((await cli(['teacher', '--config', cfg, '--steps', '1', '--out', path.join(root, 'run'), '--export', teacher])).code).toBe(0);
    const bad = await cli(['teacher-check', '--teacher', teacher, '--timesteps', '5,1000', '--backend', 'wasm']);
    expect(bad.code).toBe(2);
    expect(bad.err).toContain('--timesteps');
    const json = path.join(root, 'check.json');
    const ok = await cli(['teacher-check', '--teacher', teacher, '--samples', '3', '--timesteps', '10,990', '--json', json, '--backend', 'wasm']);
    expect(ok.err).not.toMatch(/Error/);
    expect(ok.code).toBe(0);
    expect(ok.out).toMatch(/\n +10 +\d\.\d{4} +\d\.\d{4} +\d\.\d{4} +-?\d+\.\d %\n +990 /);
    const saved = JSON.parse(fs.readFileSync(json, 'utf8'));
    expect(saved.captionReliance.map((r: { t: number }) => r.t)).toEqual([10, 990]);

    // --prompt-swap: one row per word and timestep; an unknown word is named
    const badSwap = await cli(['teacher-check', '--teacher', teacher, '--samples', '2', '--prompt-swap', 'shape,size', '--backend', 'wasm']);
    expect(badSwap.code).toBe(2);
    expect(badSwap.err).toMatch(/--prompt-swap[\s\S]*size/);
    const swapJson = path.join(root, 'swap.json');
    const swap = await cli(['teacher-check', '--teacher', teacher, '--samples', '2', '--prompt-swap', 'shape,color', '--swap-samples', '5', '--swap-timesteps', '100,700', '--evaluator', EVALUATOR, '--json', swapJson, '--backend', 'wasm']);
    expect(swap.err).not.toMatch(/Error/);
    expect(swap.code).toBe(0);
    expect(swap.out).toMatch(/\nshape +100 +\d+\.\d % +\d+\.\d % +\d+\.\d % +\d+\.\d %\n/);
    const swapRows = JSON.parse(fs.readFileSync(swapJson, 'utf8')).promptSwap as { attribute: string; t: number; samples: number }[];
    expect(swapRows.map((r) => `${r.attribute}@${r.t}/${r.samples}`)).toEqual(['shape@100/5', 'shape@700/5', 'color@100/5', 'color@700/5']);

    // --guidance-sweep: the evaluator reads held-out renders and the teacher's samples at each scale
    const badSweep = await cli(['teacher-check', '--teacher', teacher, '--samples', '2', '--guidance-sweep', '1,x', '--backend', 'wasm']);
    expect(badSweep.code).toBe(2);
    expect(badSweep.err).toContain('--guidance-sweep');
    const sweepJson = path.join(root, 'sweep.json');
    const args = ['--samples', '2', '--guidance-sweep', '0,2', '--sweep-prompts', '6', '--sweep-first-row', '40', '--sweep-steps', '2'];
    const sweep = await cli(['teacher-check', '--teacher', teacher, ...args, '--evaluator', EVALUATOR, '--json', sweepJson, '--backend', 'wasm']);
    expect(sweep.err).not.toMatch(/Error/);
    expect(sweep.code).toBe(0);
    expect(sweep.out).toContain('guidance sweep: validation rows 40–45, DDIM 2 steps');
    expect(sweep.out).toMatch(/\nreal renders +0\.0 +0\.000 /);
    const rows = JSON.parse(fs.readFileSync(sweepJson, 'utf8')).guidanceSweep.rows as { guidance: number | null; fid: number; cmmd: number; adherence: { hits: number; total: number } }[];
    expect(rows.map((r) => r.guidance)).toEqual([null, 0, 2]);
    for (const r of rows.slice(1)) {
      expect(r.fid).toBeGreaterThan(0);
      expect(r.adherence.total).toBe(6);
    }
    // the default engine (auto: ONNX Runtime on an in-memory export) and the eager tfjs model sample the same images
    // up to rounding
    const tfjsJson = path.join(root, 'sweep-tfjs.json');
    const eager = await cli(['teacher-check', '--teacher', teacher, ...args, '--engine', 'tfjs', '--evaluator', EVALUATOR, '--json', tfjsJson, '--backend', 'wasm']);
    expect(eager.code).toBe(0);
    const eagerSweep = JSON.parse(fs.readFileSync(tfjsJson, 'utf8')).guidanceSweep as { engine: string; rows: typeof rows };
    expect(eagerSweep.engine).toBe('tfjs');
    expect(JSON.parse(fs.readFileSync(sweepJson, 'utf8')).guidanceSweep.engine).toBe('auto');
    eagerSweep.rows.forEach((r, i) => expect(Math.abs(r.fid - rows[i]!.fid)).toBeLessThanOrEqual(1e-3 * Math.max(1, rows[i]!.fid)));

    // the renders' row is the evaluator's own reading of validation rows 40–45 of the teacher's world
    const world = new SyntheticWorld({ imageSize: 16 });
    const renders = Array.from({ length: 6 }, (_, k) => world.sample('validation', 40 + k));
    const classifier = SyntheticAttributeClassifier.load(EVALUATOR);
    try {
      const { predictions } = await classifier.predict(renders.map((x) => x.image));
      const expected = promptAdherence(predictions, renders.map((x) => x.attributes)).overall;
      expect(rows[0]!.adherence).toEqual(expected);
    } finally {
      classifier.dispose();
    }
  });
});
