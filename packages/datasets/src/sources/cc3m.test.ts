import * as fs from 'node:fs';
import * as path from 'node:path';
import { InputError } from '@aptp/core';
import { PALETTE, paletteIndex, solidImage, tempDir, truncatedJpeg } from '../fixtures';
import { createDataLoader } from '../iterate/batcher';
import { transformPreset } from '../image/transforms';
import { datasetStats, formatDatasetStats } from '../stats';
import { openCc3m } from './cc3m';

/**
 * Reference layout with deliberately broken data: TSV rows 0..9; images for rows 0, 1, 3, 4, 5, 6, 8, 12.
 * Row 2 and 7 and 9 have no image (not downloaded); row 3 is a truncated JPEG, row 4 a zero-byte file, row 5 a text
 * file, row 12 has no TSV row, row 6 has an empty caption. Rows 0, 1, 8 are good.
 */
async function fixture(): Promise<string> {
  const root = tempDir();
  const dir = path.join(root, 'validation');
  fs.mkdirSync(dir);
  const tsv = Array.from({ length: 10 }, (_, r) => `${r === 6 ? '  ' : `row ${r} caption`}\thttp://example.com/${r}.jpg`).join('\n');
  fs.writeFileSync(path.join(root, 'Validation_GCC-1.1.0-Validation.tsv'), `${tsv}\r\n`);
  fs.writeFileSync(path.join(dir, '0_3412'), await solidImage(PALETTE[0]!, 30, 20));
  fs.writeFileSync(path.join(dir, '1_998877'), await solidImage(PALETTE[1]!, 20, 30));
  fs.writeFileSync(path.join(dir, '3_1'), await truncatedJpeg());
  fs.writeFileSync(path.join(dir, '4_1'), Buffer.alloc(0));
  fs.writeFileSync(path.join(dir, '5_1'), 'not a jpeg');
  fs.writeFileSync(path.join(dir, '6_1'), await solidImage(PALETTE[6]!, 16, 16));
  fs.writeFileSync(path.join(dir, '8_5'), await solidImage(PALETTE[3]!, 24, 24));
  fs.writeFileSync(path.join(dir, '12_5'), await solidImage(PALETTE[4]!, 24, 24));
  fs.writeFileSync(path.join(dir, 'README.txt'), 'stray file');
  return root;
}

describe('CC3M reference layout (APTP.md §7.1)', () => {
  it('joins images to TSV rows by the row index in the file name; bad rows are skipped, counted and named', async () => {
    const root = await fixture();
    const source = await openCc3m({ format: 'cc3m', root, split: 'validation' });
    expect(source.length).toBe(8); // image files with a row-index name
    const info = source.info();
    expect(info.notes.missingImage).toEqual({ count: 3, examples: ['Validation_GCC-1.1.0-Validation.tsv row 2', 'Validation_GCC-1.1.0-Validation.tsv row 7', 'Validation_GCC-1.1.0-Validation.tsv row 9'] });
    expect(info.notes.unrecognisedFile).toEqual({ count: 1, examples: ['README.txt'] });

    const loader = createDataLoader(source, { batchSize: 2, seed: 43, shuffle: false, transform: transformPreset('train', 8) });
    const got: [string, number][] = [];
    for await (const b of loader) b.captions.forEach((c, i) => got.push([c, paletteIndex(b.pixels, i * 192, 64)]));
    // Each surviving caption still sits on its own image: row 0 → PALETTE[0], row 1 → PALETTE[1], row 8 → PALETTE[3].
    expect(got).toEqual([
      ['row 0 caption', 0],
      ['row 1 caption', 1],
      ['row 8 caption', 3],
    ]);
    const skips = loader.skips();
    expect(skips.byReason).toEqual({ truncatedImage: 1, emptyFile: 1, unreadableImage: 1, emptyCaption: 1, noCaption: 1 });
    expect(skips.examples.map((e) => [path.basename(e.file), e.skip])).toEqual([
      ['3_1', 'truncatedImage'],
      ['4_1', 'emptyFile'],
      ['5_1', 'unreadableImage'],
      ['6_1', 'emptyCaption'],
      ['12_5', 'noCaption'],
    ]);
  });

  it('a cached image list naming a deleted file gives a missingImage skip, not a shifted caption', async () => {
    const root = await fixture();
    await openCc3m({ format: 'cc3m', root, split: 'validation', imageListFile: 'val_names.txt' });
    expect(fs.readFileSync(path.join(root, 'val_names.txt'), 'utf8')).toContain('8_5');
    fs.rmSync(path.join(root, 'validation', '1_998877'));
    const source = await openCc3m({ format: 'cc3m', root, split: 'validation', imageListFile: 'val_names.txt' });
    const loader = createDataLoader(source, { batchSize: 4, seed: 1, shuffle: false, transform: transformPreset('evalCenter', 8) });
    const got: [string, number][] = [];
    for await (const b of loader) b.captions.forEach((c, i) => got.push([c, paletteIndex(b.pixels, i * 192, 64)]));
    expect(got).toEqual([
      ['row 0 caption', 0],
      ['row 8 caption', 3],
    ]);
    expect(loader.skips().byReason.missingImage).toBe(1);
    expect(loader.skips().examples[0]!.file).toBe(path.join(root, 'validation', '1_998877'));
  });

  it('reports statistics with the first bad files', async () => {
    const root = await fixture();
    const stats = await datasetStats(await openCc3m({ format: 'cc3m', root, split: 'validation' }));
    expect(stats).toMatchObject({ rows: 8, examined: 8, usable: 3, distinctCaptions: 3, imageSides: { minShort: 20, maxLong: 30 } });
    expect(stats.skips.byReason).toEqual({ truncatedImage: 1, emptyFile: 1, unreadableImage: 1, emptyCaption: 1, noCaption: 1 });
    const text = formatDatasetStats(stats);
    expect(text).toContain('5 skipped');
    expect(text).toContain('3_1 (truncatedImage)');
    expect(text).toContain('missingImage: 3');
  });

  it('fails clearly when the TSV is missing', async () => {
    const root = tempDir();
    await expect(openCc3m({ format: 'cc3m', root, split: 'train' })).rejects.toThrow(InputError);
    await expect(openCc3m({ format: 'cc3m', root, split: 'train' })).rejects.toThrow(/Train_GCC-training\.tsv/);
  });
});
