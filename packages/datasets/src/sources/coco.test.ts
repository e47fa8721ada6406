import * as fs from 'node:fs';
import * as path from 'node:path';
import { ConfigError, InputError } from '@aptp/core';
import { PALETTE, paletteIndex, solidImage, tempDir } from '../fixtures';
import { createDataLoader } from '../iterate/batcher';
import { transformPreset } from '../image/transforms';
import { cocoFileName, openCoco2014, readCocoCaptions, type CocoAnnotation } from './coco';
import { openCoco30k, selectCoco30k, writeCoco30kReferenceImages, writeCoco30kSelection } from './coco30k';

/** 25 images with 1–3 captions each; annotations interleaved so "first caption in file order" matters. */
function annotations(): { images: { id: number; file_name: string }[]; annotations: CocoAnnotation[] } {
  const images = Array.from({ length: 25 }, (_, k) => ({ id: 1000 + 7 * k, file_name: cocoFileName('val', 1000 + 7 * k) }));
  const anns: CocoAnnotation[] = [];
  let id = 1;
  for (let round = 0; round < 3; round++) {
    for (let k = 24; k >= 0; k--) {
      if (round > 0 && k % (round + 1) === 0) continue;
      anns.push({ image_id: 1000 + 7 * k, id: id++, caption: `image ${k} caption ${round}` });
    }
  }
  return { images, annotations: anns };
}

describe('COCO 2014 captions (APTP.md §7.2)', () => {
  it('has one row per caption annotation, each with its own image', async () => {
    const root = tempDir();
    const data = annotations();
    fs.mkdirSync(path.join(root, 'annotations'));
    fs.mkdirSync(path.join(root, 'images', 'val2014'), { recursive: true });
    fs.writeFileSync(path.join(root, 'annotations', 'captions_val2014.json'), JSON.stringify(data));
    for (let k = 0; k < 8; k++) fs.writeFileSync(path.join(root, 'images', 'val2014', cocoFileName('val', 1000 + 7 * k)), await solidImage(PALETTE[k]!, 12, 10));
    const source = await openCoco2014({ format: 'coco2014', root, split: 'val' });
    expect(source.length).toBe(data.annotations.length);
    const loader = createDataLoader(source, { batchSize: 7, seed: 43, shuffle: true, transform: transformPreset('eval', 8) });
    let seen = 0;
    for await (const b of loader) {
      b.captions.forEach((c, i) => {
        const k = Number(/^image (\d+)/.exec(c)![1]);
        expect(paletteIndex(b.pixels, i * 192, 64)).toBe(k);
        expect((b.attributes[i] as { imageId: number }).imageId).toBe(1000 + 7 * k);
      });
      seen += b.captions.length;
    }
    // Images 8..24 are not on disk: their rows are skipped as missing, by name.
    const rowsWithImage = data.annotations.filter((a) => (a.image_id - 1000) / 7 < 8).length;
    expect(seen).toBe(rowsWithImage);
    const skips = loader.skips();
    expect(skips.total).toBe(data.annotations.length - rowsWithImage);
    expect(skips.byReason).toEqual({ missingImage: data.annotations.length - rowsWithImage });
    expect(skips.examples[0]!.file).toMatch(/COCO_val2014_0000000010\d\d\.jpg$/);
  });

  it('names the file and field of a malformed annotation', () => {
    const dir = tempDir();
    const file = path.join(dir, 'bad.json');
    fs.writeFileSync(file, JSON.stringify({ annotations: [{ image_id: 1, id: 1, caption: 'ok' }, { image_id: 2, id: 2, caption: 5 }] }));
    const err = (() => {
      try {
        readCocoCaptions(file);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(InputError);
    expect((err as InputError).message).toBe(`${file}: annotations[1].caption: bad COCO annotation: expected string, found 5`);
  });
});

describe('COCO-30k selection (APTP.md §7.2)', () => {
  it('dedupes by image keeping the first caption in file order, then takes numpy choice(n, k, replace=False) with seed 42', () => {
    const data = annotations();
    const selected = selectCoco30k(data.annotations, 10, 42);
    // Unique images appear in file order 24, 23, …, 0 (first round), each with caption round 0.
    // numpy: np.random.seed(42); np.random.choice(25, 10, replace=False) → [8 16 0 23 11 9 13 1 22 5]
    const expectedPositions = [8, 16, 0, 23, 11, 9, 13, 1, 22, 5];
    expect(selected.map((a) => a.caption)).toEqual(expectedPositions.map((p) => `image ${24 - p} caption 0`));
    expect(new Set(selected.map((a) => a.image_id)).size).toBe(10);
    expect(() => selectCoco30k(data.annotations, 26, 42)).toThrow(ConfigError);
  });

  it('writes the selection file (annotations only) that the coco30k source reads back', async () => {
    const root = tempDir();
    fs.mkdirSync(path.join(root, 'annotations'));
    fs.writeFileSync(path.join(root, 'annotations', 'captions_val2014.json'), JSON.stringify(annotations()));
    const summary = writeCoco30kSelection({ annotationsFile: path.join(root, 'annotations', 'captions_val2014.json'), outFile: path.join(root, 'annotations', 'captions_val2014_30k.json'), count: 10 });
    expect(summary).toMatchObject({ images: 25, selected: 10 });
    const written = JSON.parse(fs.readFileSync(summary.file, 'utf8')) as Record<string, unknown>;
    expect(Object.keys(written)).toEqual(['annotations']);
    const source = await openCoco30k({ format: 'coco30k', root });
    expect(source.length).toBe(10);
    const row = await source.get(0);
    expect(row).toMatchObject({ caption: 'image 16 caption 0', image: { kind: 'file', path: path.join(root, 'images', 'val2014', cocoFileName('val', 1000 + 7 * 16)) } });

    // Reference images: only image 16 (the first selected) exists on disk; the others are skipped by name.
    fs.mkdirSync(path.join(root, 'images', 'val2014'), { recursive: true });
    fs.writeFileSync(path.join(root, 'images', 'val2014', cocoFileName('val', 1112)), await solidImage(PALETTE[0]!, 40, 30, 'png'));
    const out = path.join(root, 'images', 'val2014_30k');
    const images = await writeCoco30kReferenceImages({ source, outDir: out, size: 16 });
    expect(images.written).toBe(1);
    expect(images.skipped.length).toBe(9);
    const npy = fs.readFileSync(path.join(out, 'COCO_val2014_000000001112.npy'));
    expect(npy.length).toBe(128 + 16 * 16 * 3);
    expect(Array.from(npy.subarray(128, 131))).toEqual(PALETTE[0]);
  });
});
