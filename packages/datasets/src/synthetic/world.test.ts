import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { renderContactSheet, writeContactSheet } from '../contactSheet';
import { tempDir } from '../fixtures';
import { createDataLoader } from '../iterate/batcher';
import { transformPreset } from '../image/transforms';
import { CATEGORIES, COLOR_NAMES, type SyntheticAttributes } from './grammar';
import { colorRgb, rgbDistance, variantRgb } from './render';
import { centroid, closestShape, colorMask, components, pixel, readGlyph } from './sceneCheck';
import { positionOf, SIZE_RADIUS, splitOfPrompt, SyntheticWorld, type SyntheticSample } from './world';

const world = new SyntheticWorld({ seed: 7 });
const samples: SyntheticSample[] = Array.from({ length: 600 }, (_, i) => world.sample('train', i));
const byCategory = (c: string) => samples.filter((s) => s.attributes.category === c);

describe('synthetic world: determinism and splits', () => {
  it('is deterministic per (seed, split, index) and differs across seeds', () => {
    const again = new SyntheticWorld({ seed: 7 });
    for (const i of [0, 1, 17, 599]) {
      const s = again.sample('train', i);
      expect(s.caption).toBe(samples[i]!.caption);
      expect(s.attributes).toEqual(samples[i]!.attributes);
      expect(Buffer.from(s.image.data).equals(Buffer.from(samples[i]!.image.data))).toBe(true);
    }
    const other = new SyntheticWorld({ seed: 8 });
    const same = samples.slice(0, 50).filter((s, i) => other.prompt('train', i).caption === s.caption).length;
    expect(same).toBeLessThan(3);
  });

  it('train and validation never share a prompt; the split follows the caption hash', () => {
    const w = new SyntheticWorld({ seed: 3, validationFraction: 0.1 });
    const train = new Set(Array.from({ length: 3000 }, (_, i) => w.prompt('train', i).caption));
    const val = Array.from({ length: 500 }, (_, i) => w.prompt('validation', i).caption);
    for (const c of val) {
      expect(train.has(c)).toBe(false);
      expect(splitOfPrompt(c, 0.1)).toBe('validation');
    }
    for (const c of train) expect(splitOfPrompt(c, 0.1)).toBe('train');
  });

  it('has well over 1e5 distinct prompts (conservative birthday estimate from 12k draws)', () => {
    const w = new SyntheticWorld({ seed: 11 });
    const n = 12_000;
    const captions = Array.from({ length: n }, (_, i) => w.prompt('train', i));
    const distinct = new Set(captions.map((c) => c.caption)).size;
    // Birthday estimate of the number of prompts: n draws from N equally likely prompts repeat ≈ n²/(2N) times.
    // Unequal probabilities only add repeats, so n²/(2·repeats) is a conservative estimate of N.
    const repeats = n - distinct;
    expect((n * n) / (2 * repeats)).toBeGreaterThan(1e5);
    const share = (cat: string) => captions.filter((c) => c.attributes.category === cat).length / n;
    expect(share('shape')).toBeCloseTo(0.35, 1);
    expect(share('count')).toBeCloseTo(0.2, 1);
    expect(share('relation')).toBeCloseTo(0.25, 1);
    expect(share('text')).toBeCloseTo(0.2, 1);
    // Paraphrases: every category uses several templates, and synonyms appear.
    for (const cat of CATEGORIES) expect(new Set(captions.filter((c) => c.attributes.category === cat).map((c) => c.attributes.template)).size).toBeGreaterThanOrEqual(4);
    const text = captions.map((c) => c.caption).join('\n');
    for (const word of ['grey', 'violet', 'rhombus', 'dots', 'beneath', 'checkerboard', 'numeral', 'upper']) expect(text).toContain(word);
  });

  it('category weights and image size are configurable', () => {
    const w = new SyntheticWorld({ seed: 1, imageSize: 64, categoryWeights: { shape: 0, count: 0, relation: 0, text: 1 } });
    const s = w.sample('train', 0);
    expect(s.attributes.category).toBe('text');
    expect([s.image.width, s.image.height, s.image.data.length]).toEqual([64, 64, 64 * 64 * 3]);
    expect(() => new SyntheticWorld({ categoryWeights: { shape: 0, count: 0, relation: 0, text: 0 } })).toThrow(/categoryWeights/);
    // geometry scales with the size: counts and positions still hold at 64 px
    const big = new SyntheticWorld({ seed: 2, imageSize: 64, categoryWeights: { shape: 1, count: 1, relation: 0, text: 0 } });
    for (let i = 0; i < 40; i++) {
      const b = big.sample('train', i);
      const m = colorMask(b.image, b.attributes, colorRgb(b.attributes.objects[0]!.color));
      if (b.attributes.category === 'count') expect(components(m, 64)).toBe(b.attributes.count);
      else expect(positionOf(centroid(m, 64)[0], centroid(m, 64)[1], 64)).toBe(b.attributes.objects[0]!.position);
    }
  });

  it('background pattern weights are configurable; the defaults give the default world', () => {
    const def = new SyntheticWorld({ seed: 3 });
    const explicit = new SyntheticWorld({ seed: 3, backgroundWeights: { plain: 0.4, stripes: 0.15, checker: 0.15, gradient: 0.15, noise: 0.15 } });
    const plain = new SyntheticWorld({ seed: 3, backgroundWeights: { plain: 1, stripes: 0, checker: 0, gradient: 0, noise: 0 } });
    const checker = new SyntheticWorld({ seed: 3, backgroundWeights: { plain: 0, stripes: 0, checker: 1, gradient: 0, noise: 0 } });
    const patterns = (w: SyntheticWorld, mentionedOnly: boolean) =>
      Array.from({ length: 300 }, (_, i) => w.prompt('train', i).attributes)
        .filter((a) => !mentionedOnly || a.mentioned.includes('background'))
        .map((a) => a.background.pattern);
    for (let i = 0; i < 50; i++) {
      const [a, b] = [def.sample('train', i), explicit.sample('train', i)];
      expect(b.caption).toBe(a.caption);
      expect(Buffer.from(b.image.data).equals(Buffer.from(a.image.data))).toBe(true);
    }
    expect(new Set(patterns(def, true)).size).toBe(5);
    expect(new Set(patterns(plain, false))).toEqual(new Set(['plain']));
    const mentioned = patterns(checker, true);
    expect(mentioned.length).toBeGreaterThan(30);
    expect(new Set(mentioned)).toEqual(new Set(['checker']));
    expect(() => new SyntheticWorld({ backgroundWeights: { plain: 0, stripes: 0, checker: 0, gradient: 0, noise: 0 } })).toThrow(/backgroundWeights/);
  });

  it('shape size weights are configurable; equal weights give the default world', () => {
    const def = new SyntheticWorld({ seed: 4 });
    const equal = new SyntheticWorld({ seed: 4, sizeWeights: { small: 2, medium: 2, large: 2 } });
    for (let i = 0; i < 200; i++) expect(equal.prompt('train', i)).toEqual(def.prompt('train', i));
    const shapeSizes = (w: SyntheticWorld, n: number) =>
      Array.from({ length: n }, (_, i) => w.prompt('train', i).attributes)
        .filter((a) => a.category === 'shape')
        .map((a) => a.objects[0]!.size);
    const share = (sizes: string[], size: string) => sizes.filter((s) => s === size).length / sizes.length;
    expect(share(shapeSizes(def, 3000), 'large')).toBeCloseTo(1 / 3, 1);
    const heavy = shapeSizes(new SyntheticWorld({ seed: 4, sizeWeights: { small: 1, medium: 1, large: 2 } }), 3000);
    expect(heavy.length).toBeGreaterThan(800);
    expect(share(heavy, 'large')).toBeCloseTo(0.5, 1);
    expect(share(heavy, 'small')).toBeCloseTo(0.25, 1);
    expect(new Set(shapeSizes(new SyntheticWorld({ seed: 4, sizeWeights: { small: 0, medium: 0, large: 1 } }), 300))).toEqual(new Set(['large']));
    // the rendered radius follows the size; other categories are not affected by the weights
    const big = new SyntheticWorld({ seed: 4, sizeWeights: { small: 0, medium: 1, large: 0 }, categoryWeights: { shape: 1, count: 1, relation: 0, text: 0 } });
    for (let i = 0; i < 40; i++) {
      const a = big.prompt('train', i).attributes;
      if (a.category === 'shape') expect([a.objects[0]!.size, a.objects[0]!.radius]).toEqual(['medium', SIZE_RADIUS.medium * 32]);
      else expect(a.objects.every((o) => o.size === 'small')).toBe(true);
    }
    expect(() => new SyntheticWorld({ sizeWeights: { small: 0, medium: 0, large: 0 } })).toThrow(/sizeWeights/);
    expect(() => new SyntheticWorld({ sizeWeights: { small: 1, medium: -1, large: 1 } })).toThrow(/sizeWeights/);
  });
});

describe('synthetic world: the rendered pixels match the attributes', () => {
  const objectMask = (s: SyntheticSample, k = 0) => colorMask(s.image, s.attributes, colorRgb(s.attributes.objects[k]!.color));

  it('single shapes: right color, right grid cell, recognisable shape, sizes ordered', () => {
    const shapes = byCategory('shape');
    expect(shapes.length).toBeGreaterThan(150);
    const areas: Record<string, number[]> = { small: [], medium: [], large: [] };
    let recognised = 0;
    for (const s of shapes) {
      const o = s.attributes.objects[0]!;
      const m = objectMask(s);
      const [cx, cy, n] = centroid(m, s.image.width);
      expect(n).toBeGreaterThan(4);
      expect(positionOf(cx, cy, s.image.width)).toBe(o.position);
      expect(Math.hypot(cx - o.center[0], cy - o.center[1])).toBeLessThan(0.25 * o.radius + 0.5);
      if (closestShape(m, s.image.width, o) === o.kind) recognised++;
      areas[o.size]!.push(n);
    }
    expect(recognised / shapes.length).toBeGreaterThan(0.97);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    expect(mean(areas.small!)).toBeLessThan(mean(areas.medium!));
    expect(mean(areas.medium!)).toBeLessThan(mean(areas.large!));
  });

  it('relations: the first object lies on the stated side of the second', () => {
    const rel = byCategory('relation');
    expect(rel.length).toBeGreaterThan(100);
    for (const s of rel) {
      const [ax, ay] = centroid(objectMask(s, 0), s.image.width);
      const [bx, by] = centroid(objectMask(s, 1), s.image.width);
      const dx = bx - ax;
      const dy = by - ay;
      const ok = { 'left of': dx > Math.abs(dy), 'right of': -dx > Math.abs(dy), above: dy > Math.abs(dx), below: -dy > Math.abs(dx) }[s.attributes.relation!];
      expect(`${s.caption}: ${ok}`).toBe(`${s.caption}: true`);
    }
  });

  it('counts: as many separate blobs of the color as the caption says', () => {
    const counts = byCategory('count');
    expect(counts.length).toBeGreaterThan(80);
    for (const s of counts) expect(`${s.caption}: ${components(objectMask(s), s.image.width)}`).toBe(`${s.caption}: ${s.attributes.count}`);
  });

  it('text: the drawn glyphs read back as the stated characters', () => {
    const texts = byCategory('text');
    expect(texts.length).toBeGreaterThan(80);
    let read = 0;
    let total = 0;
    for (const s of texts) {
      const m = objectMask(s);
      const got = s.attributes.objects.map((o) => readGlyph(m, s.image.width, o)).join('');
      total++;
      if (got === s.attributes.text) read++;
    }
    expect(read / total).toBeGreaterThan(0.97);
  });

  it('backgrounds: pixels away from the objects have the background color (or its second tone)', () => {
    for (const s of samples) {
      const a: SyntheticAttributes = s.attributes;
      const tones = [colorRgb(a.background.color), variantRgb(a.background.color)];
      const far = (x: number, y: number) => a.objects.every((o) => Math.hypot(x + 0.5 - o.center[0], y + 0.5 - o.center[1]) > o.radius * 1.5 + 2);
      // gradients pass between the tones; noise adds up to ±14 per channel
      const limit = a.background.pattern === 'gradient' ? rgbDistance(tones[0]!, tones[1]!) / 2 + 1 : a.background.pattern === 'noise' ? 25 : 0.5;
      let worst = 0;
      for (let y = 0; y < s.image.height; y += 2) {
        for (let x = 0; x < s.image.width; x += 2) {
          if (!far(x, y)) continue;
          const p = pixel(s.image, x, y);
          worst = Math.max(worst, a.background.pattern === 'plain' ? rgbDistance(p, tones[0]!) : Math.min(...tones.map((t) => rgbDistance(p, t))));
        }
      }
      expect(worst).toBeLessThanOrEqual(limit);
      if (!a.mentioned.includes('background')) expect(['black', 'white', 'gray']).toContain(a.background.color);
    }
    const used = new Set(samples.filter((s) => s.attributes.mentioned.includes('background')).map((s) => s.attributes.background.pattern));
    expect(used).toEqual(new Set(['plain', 'stripes', 'checker', 'gradient', 'noise']));
  });

  it('keeps every object color well apart from the background colors', () => {
    for (const s of samples) {
      for (const o of s.attributes.objects) expect(rgbDistance(colorRgb(o.color), colorRgb(s.attributes.background.color))).toBeGreaterThanOrEqual(110);
    }
    expect(COLOR_NAMES.length).toBe(12);
  });
});

describe('synthetic world as a data source', () => {
  it('feeds the loader with [-1, 1] 32×32 images and the attributes', async () => {
    const source = new SyntheticWorld({ seed: 7, numSamples: 10 }).source('train');
    const batches = [];
    for await (const b of createDataLoader(source, { batchSize: 4, seed: 1, shuffle: false, transform: transformPreset('synthetic') })) batches.push(b);
    expect(batches.map((b) => b.shape)).toEqual([
      [4, 3, 32, 32],
      [4, 3, 32, 32],
      [2, 3, 32, 32],
    ]);
    expect(batches[0]!.captions[0]).toBe(samples[0]!.caption);
    expect((batches[0]!.attributes[1] as SyntheticAttributes).objects).toEqual(samples[1]!.attributes.objects);
    expect(batches[0]!.pixels[0]).toBeCloseTo(samples[0]!.image.data[0]! / 127.5 - 1, 6);
  });

  it('writes a contact sheet PNG whose tiles are the upscaled samples with captions below', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'sheet.png');
    const tiles = samples.slice(0, 6).map((s) => ({ image: s.image, caption: s.caption }));
    const sheet = await writeContactSheet(file, tiles, { columns: 3, scale: 3 });
    expect(sheet).toEqual(renderContactSheet(tiles, { columns: 3, scale: 3 }));
    const { data, info } = await sharp(fs.readFileSync(file)).raw().toBuffer({ resolveWithObject: true });
    expect([info.width, info.height, info.channels]).toEqual([sheet.width, sheet.height, 3]);
    // tile 4 (row 1, col 1): pixel (10, 20) of the sheet tile = sample pixel (3, 6)
    const cellW = 96 + 4;
    const cellH = 96 + 4 + 4 * 9 + 4;
    const x = 4 + cellW + 10;
    const y = 4 + cellH + 20;
    expect(Array.from(data.subarray((y * info.width + x) * 3, (y * info.width + x) * 3 + 3))).toEqual(Array.from(pixel(samples[4]!.image, 3, 6)));
  });
});
