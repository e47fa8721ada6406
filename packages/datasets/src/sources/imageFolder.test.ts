import * as fs from 'node:fs';
import * as path from 'node:path';
import { InputError } from '@aptp/core';
import { PALETTE, paletteIndex, solidImage, tempDir } from '../fixtures';
import { createDataLoader } from '../iterate/batcher';
import { transformPreset } from '../image/transforms';
import { openImageFolder, parseCsv } from './imageFolder';

async function folder(): Promise<string> {
  const root = tempDir();
  fs.mkdirSync(path.join(root, 'img'));
  fs.writeFileSync(path.join(root, 'img', 'a.png'), await solidImage(PALETTE[0]!, 10, 10, 'png'));
  fs.writeFileSync(path.join(root, 'img', 'b.webp'), await solidImage(PALETTE[1]!, 10, 14, 'webp'));
  fs.writeFileSync(path.join(root, 'img', 'c.jpg'), await solidImage(PALETTE[2]!, 14, 10));
  fs.writeFileSync(path.join(root, 'img', 'd.jpg'), 'text pretending to be a jpeg');
  return root;
}

describe('image folder + captions file', () => {
  it('JSONL: rows in file order, bad lines noted, missing/broken images and empty captions skipped by name', async () => {
    const root = await folder();
    const lines = [
      JSON.stringify({ file: 'img/a.png', caption: 'first red' }),
      '{not json',
      JSON.stringify({ file: 'img/missing.jpg', caption: 'nobody home' }),
      JSON.stringify({ file: 'img/b.webp', caption: 'second green' }),
      JSON.stringify({ file: 'img/d.jpg', caption: 'broken' }),
      JSON.stringify({ file: 'img/c.jpg', caption: '' }),
      JSON.stringify({ file: 'img/c.jpg', caption: 'third blue' }),
    ];
    fs.writeFileSync(path.join(root, 'captions.jsonl'), lines.join('\n') + '\n');
    const source = await openImageFolder({ format: 'imageFolder', root, captions: 'captions.jsonl' });
    expect(source.length).toBe(6);
    expect(source.info().notes.badLine).toEqual({ count: 1, examples: ['captions.jsonl:2'] });
    const loader = createDataLoader(source, { batchSize: 3, seed: 0, shuffle: false, transform: transformPreset('evalCenter', 8) });
    const got: [string, string, number][] = [];
    for await (const b of loader) b.captions.forEach((c, i) => got.push([b.ids[i]!, c, paletteIndex(b.pixels, i * 192, 64)]));
    expect(got).toEqual([
      ['img/a.png', 'first red', 0],
      ['img/b.webp', 'second green', 1],
      ['img/c.jpg', 'third blue', 2],
    ]);
    expect(loader.skips().examples.map((e) => [path.basename(e.file), e.skip])).toEqual([
      ['missing.jpg', 'missingImage'],
      ['d.jpg', 'unreadableImage'],
      ['c.jpg', 'emptyCaption'],
    ]);
  });

  it('CSV with quoting, custom columns; a missing column is an error naming file and field', async () => {
    const root = await folder();
    fs.writeFileSync(path.join(root, 'caps.csv'), 'image,text,extra\r\nimg/a.png,"a ""quoted"", multi\nline caption",1\nimg/c.jpg,plain,2\nshort-row\n');
    const source = await openImageFolder({ format: 'imageFolder', root, captions: 'caps.csv', imageField: 'image', captionField: 'text' });
    expect(source.length).toBe(2);
    expect(await source.get(0)).toMatchObject({ id: 'img/a.png', caption: 'a "quoted", multi\nline caption' });
    expect(source.info().notes.badLine!.count).toBe(1);
    const err = await openImageFolder({ format: 'imageFolder', root, captions: 'caps.csv' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toBe(`${path.join(root, 'caps.csv')}: file: CSV header lacks a column: expected a "file" column, found ["image","text","extra"]`);
  });

  it('parseCsv follows RFC 4180', () => {
    expect(parseCsv('a,b\n"x,1","y""z"\n\n3,\n')).toEqual([
      ['a', 'b'],
      ['x,1', 'y"z'],
      ['3', ''],
    ]);
  });
});
