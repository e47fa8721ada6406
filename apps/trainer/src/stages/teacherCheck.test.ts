import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { DDPMScheduler, runProgram } from '@aptp/core';
import { useBackend } from '@aptp/core/testing';
import { SyntheticWorld } from '@aptp/datasets';
import { HashedTextConditioner, createEagerUNet, hostSource, parseUNetConfig } from '@aptp/unet-gating';
import { SyntheticAttributeClassifier, promptAdherence } from '@aptp/eval';
import { trainerProgram } from '../program';
import { TINY_TEACHER_UNET } from '../steps/__fixtures__/tinyTeacher';
import { initUNetWeights } from '../steps/trainableUNet';
import { captionReliance } from './teacherCheck';

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
    expect((await cli(['teacher-check', '--help'])).out).toContain('--timesteps');
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
