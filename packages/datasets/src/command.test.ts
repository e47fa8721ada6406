import * as fs from 'node:fs';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import sharp from 'sharp';
import { runProgram } from '@aptp/core';
import { datasetInfoCommand } from './command';
import { solidImage, tempDir, truncatedJpeg } from './fixtures';

async function run(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out = new PassThrough();
  const err = new PassThrough();
  let o = '';
  let e = '';
  out.on('data', (d) => (o += d));
  err.on('data', (d) => (e += d));
  const code = await runProgram({ name: 'datasets', summary: 's', commands: [datasetInfoCommand] }, argv, { out, err });
  return { code, out: o, err: e };
}

describe('data command', () => {
  it('prints statistics of the synthetic world and writes a contact sheet', async () => {
    const dir = tempDir();
    const sheet = path.join(dir, 'sheet.png');
    const r = await run(['data', '--limit', '200', '--sheet', sheet, '--count', '16', '--columns', '4']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^synthetic\/train \(synthetic\): 100000 rows\nexamined 200, usable 200, 0 skipped/);
    expect(r.out).toMatch(/categories: .*shape \d+/);
    const meta = await sharp(sheet).metadata();
    expect(r.out).toContain(`contact sheet: ${sheet} (16 samples, ${meta.width}x${meta.height})`);
  });

  it('reads a JSON data set config and reports broken files', async () => {
    const root = tempDir();
    fs.writeFileSync(path.join(root, 'a.jpg'), await solidImage([9, 9, 9], 8, 8));
    fs.writeFileSync(path.join(root, 'b.jpg'), await truncatedJpeg());
    fs.writeFileSync(path.join(root, 'caps.jsonl'), ['a.jpg', 'b.jpg'].map((f) => JSON.stringify({ file: f, caption: f })).join('\n'));
    fs.writeFileSync(path.join(root, 'data.json'), JSON.stringify({ format: 'imageFolder', root: '.', captions: 'caps.jsonl' }));
    const r = await run(['data', '--dataset', path.join(root, 'data.json')]);
    expect(r.code).toBe(0);
    expect(r.out).toContain('examined 2, usable 1, 1 skipped (truncatedImage 1); first: ');
    expect(r.out).toContain(`${path.join(root, 'b.jpg')} (truncatedImage)`);
    const bad = await run(['data', '--dataset', path.join(root, 'nope.json')]);
    expect(bad.code).toBe(3);
    expect(bad.err).toContain('nope.json');
  });
});
