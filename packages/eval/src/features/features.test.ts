import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { ClipTokenizer, OnnxGraph, vocabFromMerges } from '@aptp/core';
import { expectClose } from '@aptp/core/testing';
import { gaussianStats } from '../metrics/frechet';
import { CLIP_MEAN, CLIP_STD, ClipImageFeatures, ClipTextFeatures } from './clip';
import { encodeNpyImage, loadRgbImage, parseNpyImage } from './images';
import { InceptionFeatures } from './inception';
import type { RgbImage } from './resize';
import { readStats, referenceStats } from './statsCache';

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eval-features-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A model returning its image input flattened: [B, 3, S, S] → [B, 3·S·S] (exposes the exact preprocessing). */
function flattenModel(size: number, file: string): string {
  const g = new OnnxGraph('flatten');
  g.input('pixel_values', 'float32', ['batch', 3, size, size]);
  g.output(g.op('Flatten', ['pixel_values'], { axis: 1 }, { output: 'embeds' }), 'float32', ['batch', 3 * size * size]);
  fs.writeFileSync(file, g.toBytes());
  return file;
}

/** A model returning per-channel means [B, 3, 1, 1] (like Inception's pool3 [B, 2048, 1, 1]). */
function poolModel(size: number, file: string): string {
  const g = new OnnxGraph('pool');
  g.input('x', 'float32', ['batch', 3, size, size]);
  g.output(g.op('GlobalAveragePool', ['x'], {}, { output: 'pool3' }), 'float32', ['batch', 3, 1, 1]);
  fs.writeFileSync(file, g.toBytes());
  return file;
}

function image(h: number, w: number, f: (y: number, x: number, c: number) => number): RgbImage {
  const data = new Uint8Array(h * w * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) data[(y * w + x) * 3 + c] = f(y, x, c);
  return { data, height: h, width: w };
}

describe('InceptionFeatures (clean-fid legacy_pytorch preprocessing)', () => {
  test('2×2 → 4×4 bilinear (PyTorch docs values) reaches the model as NCHW in [−1, 1] / [0, 1]', async () => {
    const img = image(2, 2, (y, x, c) => (1 + 2 * y + x) * (c + 1) * 10); // channel c: 10(c+1)·[[1,2],[3,4]]
    const docs = [1, 1.25, 1.75, 2, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3, 3.25, 3.75, 4];
    const model = flattenModel(4, path.join(dir, 'flat4.onnx'));
    for (const [range, map] of [
      ['minusOneToOne', (v: number) => (2 * v) / 255 - 1],
      ['zeroToOne', (v: number) => v / 255],
    ] as const) {
      const inc = await InceptionFeatures.load(model, { size: 4, inputRange: range });
      const f = await inc.extract([img, img]);
      expect([f.rows, f.dim]).toEqual([2, 48]);
      const expected = [0, 1, 2].flatMap((c) => docs.map((v) => map(v * (c + 1) * 10)));
      expectClose(f.data.subarray(0, 48), expected, { name: `${range} image 0`, atol: 1e-6 });
      expectClose(f.data.subarray(48), expected, { name: `${range} image 1`, atol: 1e-6 });
      await inc.dispose();
    }
  });

  test('256 → 299 ramp: pool3-shaped [B, 3, 1, 1] output squeezed to [B, 3], batches of 2 over 3 images', async () => {
    const model = poolModel(299, path.join(dir, 'pool299.onnx'));
    const inc = await InceptionFeatures.load(model, { batchSize: 2 });
    const ramp = image(256, 256, (_y, x, c) => (c === 0 ? x : c === 1 ? 255 - x : 128));
    const f = await inc.extract([ramp, ramp, ramp]);
    expect([f.rows, f.dim]).toEqual([3, 3]);
    // Mean over the resized ramp: mean_d clamp((d+0.5)·256/299 − 0.5, 0, 255), mapped to [−1, 1].
    let m = 0;
    for (let d = 0; d < 299; d++) m += Math.min(255, Math.max(0, ((d + 0.5) * 256) / 299 - 0.5));
    m /= 299;
    const exp = [(2 * m) / 255 - 1, (2 * (255 - m)) / 255 - 1, (2 * 128) / 255 - 1];
    for (let r = 0; r < 3; r++) expectClose(f.data.subarray(3 * r, 3 * r + 3), exp, { name: `row ${r}`, atol: 1e-5 });
    await inc.dispose();
  });
});

describe('ClipImageFeatures (CLIP / CMMD preprocessing)', () => {
  test('resizeThenCrop (round-half-even offset) vs cropThenResize (floor offset), CLIP mean/std, unnormalised output', async () => {
    const img = image(2, 5, (y, x, c) => 40 * x + 7 * y + c); // H=2, W=5: no resize needed at size 2
    const model = flattenModel(2, path.join(dir, 'flat2.onnx'));
    const expected = (left: number): number[] =>
      [0, 1, 2].flatMap((c) => [0, 1].flatMap((y) => [0, 1].map((x) => ((40 * (x + left) + 7 * y + c) / 255 - CLIP_MEAN[c]!) / CLIP_STD[c]!)));
    const base = { size: 2, filter: 'bicubic', mean: CLIP_MEAN, std: CLIP_STD } as const;
    // torchvision CenterCrop: round((5 − 2)/2) = round(1.5) = 2; cmmd-pytorch: (5 − 2)//2 = 1.
    for (const [order, left] of [
      ['resizeThenCrop', 2],
      ['cropThenResize', 1],
    ] as const) {
      const clip = await ClipImageFeatures.load(model, { preprocess: { ...base, order }, normalize: false });
      const f = await clip.extract([img]);
      expectClose(f.data, expected(left), { name: order, atol: 1e-6 });
      await clip.dispose();
    }
  });

  test('embeddings are L2-normalised by default', async () => {
    const clip = await ClipImageFeatures.load(poolModel(4, path.join(dir, 'pool4.onnx')), { preprocess: { size: 4, order: 'resizeThenCrop', filter: 'bicubic', mean: CLIP_MEAN, std: CLIP_STD } });
    const f = await clip.extract([image(8, 6, (y, x, c) => 20 * y + 9 * x + 50 * c)]);
    expect(f.dim).toBe(3);
    expect(Math.hypot(...f.data)).toBeCloseTo(1, 6);
    await clip.dispose();
  });
});

describe('ClipTextFeatures', () => {
  const merges: [string, string][] = [
    ['c', 'a'],
    ['ca', 't</w>'],
  ];
  const tok = new ClipTokenizer({ vocab: vocabFromMerges(merges), merges });

  test('ids [B, 77] int64 reach the model; attention_mask fed when present; truncation reported with indices', async () => {
    const g = new OnnxGraph('text');
    g.input('input_ids', 'int64', ['batch', 77]);
    g.input('attention_mask', 'int64', ['batch', 77]);
    const ids = g.op('Cast', ['input_ids'], { to: 1 });
    const mask = g.op('Cast', ['attention_mask'], { to: 1 });
    g.output(g.op('Concat', [ids, mask], { axis: 1 }, { output: 'text_embeds' }), 'float32', ['batch', 154]);
    const file = path.join(dir, 'text.onnx');
    fs.writeFileSync(file, g.toBytes());
    const text = await ClipTextFeatures.load(file, tok, { normalize: false, batchSize: 2 });
    const long = Array.from({ length: 90 }, () => 'cat').join(' ');
    const r = await text.extract(['a cat', 'cat', long]);
    expect([r.features.rows, r.features.dim]).toEqual([3, 154]);
    expect(r.truncated).toEqual([{ index: 2, tokens: 92 }]);
    const row = (i: number): number[] => Array.from(r.features.data.subarray(154 * i, 154 * i + 154));
    const catId = 512 + 1;
    expect(row(0).slice(0, 5)).toEqual([tok.sotId, 320, catId, tok.eotId, 0]);
    expect(row(0).slice(77, 82)).toEqual([1, 1, 1, 1, 0]);
    expect(row(2)[76]).toBe(tok.eotId);
    expect(row(2).slice(77).every((v) => v === 1)).toBe(true);
    await text.dispose();
  });
});

describe('images and cached reference statistics', () => {
  test('.npy round trip and PNG decode give the same pixels', async () => {
    const img = image(5, 7, (y, x, c) => (31 * y + 17 * x + 101 * c) % 256);
    expect(parseNpyImage(encodeNpyImage(img))).toEqual(img);
    const png = path.join(dir, 'a.png');
    await sharp(Buffer.from(img.data), { raw: { width: 7, height: 5, channels: 3 } }).png().toFile(png);
    expect(await loadRgbImage(png)).toEqual(img);
    await expect(loadRgbImage(path.join(dir, 'missing.png'))).rejects.toThrow(/missing\.png: cannot read image/);
  });

  test('referenceStats computes once, then hits the cache by content (renames hit, edits and other models miss)', async () => {
    const refDir = path.join(dir, 'ref');
    fs.mkdirSync(refDir);
    const files: string[] = [];
    for (let i = 0; i < 5; i++) {
      const f = path.join(refDir, `img${i}.npy`);
      fs.writeFileSync(f, encodeNpyImage(image(6, 6, (y, x, c) => (13 * i + 29 * y + 7 * x + 61 * c * i) % 256)));
      files.push(f);
    }
    const cacheDir = path.join(dir, 'cache');
    const inc = await InceptionFeatures.load(poolModel(8, path.join(dir, 'pool8.onnx')), { size: 8 });
    const first = await referenceStats(files, inc, { cacheDir });
    expect(first.cached).toBe(false);
    const direct = await gaussianStats(await inc.extractFiles(files));
    expectClose(first.sigma, direct.sigma, { name: 'sigma', atol: 1e-15 });
    const second = await referenceStats(files, inc, { cacheDir });
    expect(second.cached).toBe(true);
    expect(second.file).toBe(first.file);
    expect(Array.from(second.mu)).toEqual(Array.from(first.mu));
    expect(Array.from(second.sigma)).toEqual(Array.from(first.sigma));
    expect(second.count).toBe(5);
    expect(readStats(first.file).dim).toBe(3);
    // Renamed files: same content → cache hit.
    const renamed = files.map((f, i) => {
      const g = path.join(refDir, `renamed${i}.npy`);
      fs.copyFileSync(f, g);
      return g;
    });
    expect((await referenceStats(renamed, inc, { cacheDir })).cached).toBe(true);
    // One changed pixel → miss.
    const changed = parseNpyImage(fs.readFileSync(renamed[0]!));
    changed.data[0] = (changed.data[0]! + 1) % 256;
    fs.writeFileSync(renamed[0]!, encodeNpyImage(changed));
    expect((await referenceStats(renamed, inc, { cacheDir })).cached).toBe(false);
    await inc.dispose();
    // Another preprocessing (input range) → miss.
    const inc01 = await InceptionFeatures.load(path.join(dir, 'pool8.onnx'), { size: 8, inputRange: 'zeroToOne' });
    expect((await referenceStats(files, inc01, { cacheDir })).cached).toBe(false);
    await inc01.dispose();
  });
});
