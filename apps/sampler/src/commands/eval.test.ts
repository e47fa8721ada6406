import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { Rng, runProgram } from '@aptp/core';
import { useBackend } from '@aptp/core/testing';
import { SyntheticAttributeClassifier, promptAdherence, syntheticFeatureDistances, type Report, type RgbImage } from '@aptp/eval';
import { encodePng } from '../generate';
import { samplerProgram } from '../program';

/**
 * `eval` on hand-made sample folders: random images scored by a randomly initialised evaluator. The numbers in
 * report.json must be exactly what the library gives for the same images (distances, adherence), and the
 * efficiency numbers what the manifests say.
 */
type Attributes = Parameters<typeof promptAdherence>[1][number];

function sink(): { stream: Writable; text: () => string } {
  let buf = '';
  return { stream: new Writable({ write(c, _e, cb) { buf += c.toString(); cb(); } }), text: () => buf };
}

const object = (kind: string, color: string, glyph?: string) => ({ kind, color, size: 'small', position: 'center', center: [16, 16], radius: 4, ...(glyph ? { glyph } : {}) });

/** Six prompts of two categories with their ground truth (the shape of the synthetic world's attributes). */
const PROMPTS: Array<{ prompt: string; category: string; attributes: Attributes }> = [
  ['a red circle', 'shape', { objects: [object('circle', 'red')], mentioned: ['shape', 'color'] }],
  ['a blue square', 'shape', { objects: [object('square', 'blue')], mentioned: ['shape', 'color'] }],
  ['the letter A', 'text', { objects: [object('glyph', 'green', 'A')], text: 'A', mentioned: ['text'] }],
  ['a green star', 'shape', { objects: [object('star', 'green')], mentioned: ['shape', 'color'] }],
  ['the word HI', 'text', { objects: [object('glyph', 'red', 'H'), object('glyph', 'red', 'I')], text: 'HI', mentioned: ['text'] }],
  ['a small triangle', 'shape', { objects: [object('triangle', 'yellow')], mentioned: ['shape', 'size'] }],
].map(([prompt, category, extra], i) => ({
  prompt: prompt as string,
  category: category as string,
  attributes: { category, imageSize: 32, background: { pattern: 'plain', color: i % 2 ? 'white' : 'black' }, template: 't', ...(extra as object) } as unknown as Attributes,
}));

function randomImage(key: string): RgbImage {
  const r = Rng.forKey(7, 'eval-test', key);
  return { width: 32, height: 32, data: Uint8Array.from({ length: 32 * 32 * 3 }, () => Math.floor(r.nextDouble() * 256)) };
}

interface Fixture {
  out: string;
  config: string;
  images: Record<string, RgbImage[]>;
  reference: RgbImage[];
  evaluator: string;
}

/** Sample folders: `aptp` (experts 0 and 1), `single` (one expert), `teacher` (`full`); all six prompts each. */
async function makeFixture(root: string): Promise<Fixture> {
  const out = path.join(root, 'run');
  const evaluator = path.join(root, 'evaluator');
  const init = SyntheticAttributeClassifier.init({}, { seed: 3 });
  init.save(evaluator);
  init.dispose();
  const refDir = path.join(root, 'reference');
  fs.mkdirSync(refDir, { recursive: true });
  const reference = Array.from({ length: 8 }, (_, i) => randomImage(`ref${i}`));
  for (const [i, im] of reference.entries()) fs.writeFileSync(path.join(refDir, `${i}.png`), await encodePng(im.data, 32, 32));
  const promptsFile = path.join(root, 'prompts.jsonl');
  fs.writeFileSync(promptsFile, PROMPTS.map((p, index) => JSON.stringify({ index, ...p })).join('\n'));
  const variants = {
    aptp: { experts: [{ id: 0, macs: 100 }, { id: 1, macs: 60 }], expertOf: (i: number) => (i % 3 === 0 ? 0 : 1) },
    single: { experts: [{ id: 0, macs: 120 }], expertOf: () => 0 },
    teacher: { experts: [], expertOf: () => 'full' as const },
  };
  const images: Record<string, RgbImage[]> = {};
  for (const [name, v] of Object.entries(variants)) {
    const dir = path.join(out, 'samples', name);
    fs.mkdirSync(path.join(dir, 'images'), { recursive: true });
    images[name] = PROMPTS.map((_, i) => randomImage(`${name}${i}`));
    const rows: string[] = [];
    for (const [i, p] of PROMPTS.entries()) {
      const file = `images/${i}.png`;
      fs.writeFileSync(path.join(dir, file), await encodePng(images[name]![i]!.data, 32, 32));
      const e = v.expertOf(i);
      const macs = e === 'full' ? 200 : v.experts.find((x) => x.id === e)!.macs;
      rows.push(JSON.stringify({ index: i, file, prompt: p.prompt, seed: 43 + i, expert: e, routed: e !== 'full', macs, imageLatencyMs: 10 + i }));
    }
    // written in reverse order: eval sorts by index
    fs.writeFileSync(path.join(dir, 'manifest.jsonl'), rows.reverse().join('\n') + '\n');
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ command: 'sample', experts: v.experts, fullMacs: 200 }));
  }
  const config = path.join(root, 'eval.json');
  fs.writeFileSync(
    config,
    JSON.stringify({
      variants: [
        { id: 'aptp', kind: 'aptp', samples: path.join(out, 'samples/aptp') },
        { id: 'single', kind: 'singleArchitecture', samples: path.join(out, 'samples/single') },
        { id: 'teacher', kind: 'teacher', samples: path.join(out, 'samples/teacher') },
      ],
      prompts: promptsFile,
      reference: refDir,
      evaluator,
      codeUsage: { withOt: [3, 3], withoutOt: [6, 0] },
      run: { title: 'test', seeds: { demo: 43 } },
      out,
      backend: 'wasm',
    }),
  );
  return { out, config, images, reference, evaluator };
}

describe('aptp-sampler eval', () => {
  let root: string;
  let fx: Fixture;
  beforeAll(async () => {
    await useBackend('wasm');
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'aptp-sampler-eval-'));
    fx = await makeFixture(root);
  });
  afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

  const run = async (config: string): Promise<{ code: number; out: string; err: string }> => {
    const o = sink();
    const e = sink();
    const code = await runProgram(samplerProgram, ['eval', '--config', config], { out: o.stream, err: e.stream });
    return { code, out: o.text(), err: e.text() };
  };

  it('writes report.json / report.html with the library numbers for the same images', async () => {
    const r = await run(fx.config);
    expect(r.err).not.toMatch(/Error/);
    expect(r.code).toBe(0);
    const report = JSON.parse(fs.readFileSync(path.join(fx.out, 'report.json'), 'utf8')) as Report;
    expect(fs.readFileSync(path.join(fx.out, 'report.html'), 'utf8')).toMatch(/^<!DOCTYPE html>/i);

    const classifier = SyntheticAttributeClassifier.load(fx.evaluator);
    try {
      const ref = await classifier.features(fx.reference);
      const attrs = PROMPTS.map((p) => p.attributes);
      for (const id of ['aptp', 'single', 'teacher']) {
        const { predictions, features } = await classifier.predict(fx.images[id]!);
        const want = await syntheticFeatureDistances(features, ref);
        const adherence = promptAdherence(predictions, attrs);
        const v = report.variants.find((x) => x.id === id)!;
        expect(v.fid).toBeCloseTo(want.fid, 10);
        expect(v.cmmd).toBeCloseTo(want.cmmd, 10);
        expect(v.adherence!.overall).toEqual({ ratio: adherence.overall.total ? adherence.overall.hits / adherence.overall.total : null, hits: adherence.overall.hits, total: 6 });
        expect(v.adherence!.perCategory.text!.total).toBe(2);
        expect(v.images).toBe(6);
      }
      // the report's per-prompt rows are the APTP images, each with its own adherence
      const { predictions } = await classifier.predict(fx.images.aptp!);
      expect(report.prompts.map((p) => p.adheres)).toEqual(promptAdherence(predictions, attrs).perImage);
    } finally {
      classifier.dispose();
    }

    // efficiency numbers from the manifests: APTP rows 0 and 3 on expert 0 (100 MACs), the others on expert 1 (60)
    expect(report.variants.find((v) => v.id === 'aptp')!.meanMacs).toBeCloseTo((2 * 100 + 4 * 60) / 6, 12);
    expect(report.variants.find((v) => v.id === 'single')!.meanMacs).toBe(120);
    expect(report.summary.teacherMacs).toBe(200);
    expect(report.experts.map((e) => [e.id, e.macsRatio, e.promptsRouted, e.meanLatencyMs])).toEqual([
      [0, 0.5, 2, (10 + 13) / 2],
      [1, 0.3, 4, (11 + 12 + 14 + 15) / 4],
    ]);
    expect(report.prompts.map((p) => [p.expert, p.image, p.category])).toEqual(PROMPTS.map((p, i) => [i % 3 === 0 ? 0 : 1, `samples/aptp/images/${i}.png`, p.category]));
    expect(report.variants.filter((v) => v.kind === 'expert').map((v) => [v.expert, v.adherence!.overall.total])).toEqual([[0, 2], [1, 4]]);
    expect(report.codeUsage.withOt!.normalizedEntropy).toBeCloseTo(1, 12);
    expect(report.codeUsage.withoutOt!.codesUsed).toBe(1);
    expect(report.claims.find((c) => c.id === 'ot-balances-code-usage')!.status).toBe('holds');
    expect(r.out).toContain(path.join(fx.out, 'report.html'));
  });

  it('rejects an image made from another prompt, naming the index', async () => {
    const cfg = JSON.parse(fs.readFileSync(fx.config, 'utf8'));
    const prompts = path.join(root, 'prompts-changed.jsonl');
    fs.writeFileSync(prompts, PROMPTS.map((p, index) => JSON.stringify({ index, ...p, prompt: index === 2 ? 'the letter B' : p.prompt })).join('\n'));
    const file = path.join(root, 'eval-changed.json');
    fs.writeFileSync(file, JSON.stringify({ ...cfg, prompts }));
    const r = await run(file);
    expect(r.code).toBe(3);
    expect(r.err).toMatch(/index 2: the image was made from another prompt: expected the letter B, found the letter A/);
  });

  it('rejects bad variant lists (no APTP variant, samples outside --out)', async () => {
    const cfg = JSON.parse(fs.readFileSync(fx.config, 'utf8'));
    const noAptp = path.join(root, 'eval-no-aptp.json');
    fs.writeFileSync(noAptp, JSON.stringify({ ...cfg, variants: cfg.variants.slice(1) }));
    const a = await run(noAptp);
    expect(a.code).toBe(2);
    expect(a.err).toMatch(/variants: exactly one variant of kind aptp/);
    const outside = path.join(root, 'eval-outside.json');
    fs.writeFileSync(outside, JSON.stringify({ ...cfg, out: path.join(root, 'elsewhere') }));
    const b = await run(outside);
    expect(b.code).toBe(2);
    expect(b.err).toMatch(/variants\.aptp\.samples: sample folders must be inside --out/);
  });
});
