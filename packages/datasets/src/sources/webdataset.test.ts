import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tar from 'tar-stream';
import { InputError } from '@aptp/core';
import { PALETTE, paletteIndex, solidImage, tempDir, truncatedJpeg } from '../fixtures';
import { createDataLoader, type Batch } from '../iterate/batcher';
import { transformPreset } from '../image/transforms';
import { expandBraces, openWebDataset, resolveShards, splitMemberName } from './webdataset';

type Member = [name: string, data: Buffer | string];

async function writeTar(file: string, members: Member[]): Promise<void> {
  const pack = tar.pack();
  const out = fs.createWriteStream(file);
  const done = new Promise<void>((resolve, reject) => {
    out.on('finish', resolve);
    out.on('error', reject);
  });
  pack.pipe(out);
  for (const [name, data] of members) pack.entry({ name }, typeof data === 'string' ? Buffer.from(data) : data);
  pack.finalize();
  await done;
}

/** img2dataset-style sample: NNNNNNNNN.jpg + .txt + .json. Caption names the palette color index. */
async function sample(key: string, color: number, opts: { txt?: boolean; json?: boolean } = {}): Promise<Member[]> {
  const m: Member[] = [[`${key}.jpg`, await solidImage(PALETTE[color]!, 12, 9)]];
  if (opts.txt ?? true) m.push([`${key}.txt`, `color ${color} key ${key}`]);
  if (opts.json ?? true) m.push([`${key}.json`, JSON.stringify({ key, caption: `color ${color} key ${key}`, status: 'success' })]);
  return m;
}

async function shards(): Promise<string> {
  const root = tempDir();
  const dir = path.join(root, 'cc3m-wds');
  fs.mkdirSync(dir);
  await writeTar(path.join(dir, '00000.tar'), [
    ...(await sample('000000000', 0)),
    ...(await sample('000000001', 1, { txt: false })), // caption from .json
    [`000000002.txt`, 'no image here'],
    [`000000003.jpg`, await truncatedJpeg()],
    [`000000003.txt`, 'truncated image'],
    ...(await sample('000000004', 2)),
  ]);
  await writeTar(path.join(dir, '00001.tar'), [...(await sample('000010000', 3)), ...(await sample('000010001', 4)), [`000010002.jpg`, await solidImage(PALETTE[5]!, 8, 8)]]);
  // A shard cut off in the middle of its third sample's image.
  const members = [...(await sample('000020000', 6)), ...(await sample('000020001', 7)), ...(await sample('000020002', 0))];
  await writeTar(path.join(dir, 'full2.tar'), members);
  const full = fs.readFileSync(path.join(dir, 'full2.tar'));
  // Each member: a 512-byte header + data padded to 512. Cut 100 bytes into the data of member 3 (000020001.jpg).
  const cut = members.slice(0, 3).reduce((s, [, d]) => s + 512 + Math.ceil(Buffer.byteLength(d) / 512) * 512, 0) + 512 + 100;
  fs.writeFileSync(path.join(dir, '00002.tar'), full.subarray(0, cut));
  fs.rmSync(path.join(dir, 'full2.tar'));
  return dir;
}

async function collect(batches: AsyncIterable<Batch<unknown>>): Promise<[string, string, number][]> {
  const out: [string, string, number][] = [];
  for await (const b of batches) b.captions.forEach((c, i) => out.push([b.ids[i]!, c, paletteIndex(b.pixels, i * 3 * b.shape[2] * b.shape[3], b.shape[2] * b.shape[3])]));
  return out;
}

describe('WebDataset shards (img2dataset layout)', () => {
  it('expands brace patterns and folders; names missing shards', () => {
    expect(expandBraces('a/{00..02}.tar')).toEqual(['a/00.tar', 'a/01.tar', 'a/02.tar']);
    expect(expandBraces('{x,y}-{1..2}')).toEqual(['x-1', 'x-2', 'y-1', 'y-2']);
    expect(splitMemberName('dir/000.seg.json')).toEqual({ key: 'dir/000', ext: 'seg.json' });
    expect(() => resolveShards('/nonexistent/{0..1}.tar')).toThrow(InputError);
  });

  it('reads samples straight from the tars; captions stay with their images; bad samples are skipped by name', async () => {
    const dir = await shards();
    const source = await openWebDataset({ format: 'webdataset', shards: path.join(dir, '{00000..00002}.tar') });
    expect(source.shards.map((s) => path.basename(s))).toEqual(['00000.tar', '00001.tar', '00002.tar']);
    const loader = createDataLoader(source, { batchSize: 3, seed: 5, shuffle: false, transform: transformPreset('evalCenter', 8) });
    const got = await collect(loader);
    expect(got).toEqual([
      ['00000.tar/000000000', 'color 0 key 000000000', 0],
      ['00000.tar/000000001', 'color 1 key 000000001', 1],
      ['00000.tar/000000004', 'color 2 key 000000004', 2],
      ['00001.tar/000010000', 'color 3 key 000010000', 3],
      ['00001.tar/000010001', 'color 4 key 000010001', 4],
      ['00002.tar/000020000', 'color 6 key 000020000', 6],
    ]);
    const skips = loader.skips();
    expect(skips.examples.map((e) => [e.id, e.skip])).toEqual([
      ['00000.tar/000000002', 'missingImage'],
      ['00000.tar/000000003', 'truncatedImage'],
      ['00001.tar/000010002', 'noCaption'],
      ['00002.tar/000020001', 'truncatedImage'],
    ]);
    expect(skips.examples[1]!.file).toBe(`${path.join(dir, '00000.tar')}:000000003.jpg`);
  });

  it('shuffled, two workers: disjoint shards, and resume from a stored state equals an uninterrupted run', async () => {
    const dir = await shards();
    const source = await openWebDataset({ format: 'webdataset', shards: dir });
    const options = { batchSize: 2, seed: 9, shuffle: true, shuffleBuffer: 2, epochs: 2, transform: transformPreset('train', 8) };
    const perWorker = await Promise.all([0, 1].map((w) => collect(createDataLoader(source, { ...options, workerIndex: w, numWorkers: 2 }))));
    const idsOf = (rows: [string, string, number][], epoch: number) => rows.slice(epoch * (rows.length / 2), (epoch + 1) * (rows.length / 2)).map((r) => r[0]);
    const shardsOf = (rows: [string, string, number][]) => new Set(rows.map((r) => r[0].split('/')[0]));
    expect([...shardsOf(perWorker[0]!)].some((s) => shardsOf(perWorker[1]!).has(s))).toBe(false);
    expect(perWorker[0]!.length + perWorker[1]!.length).toBe(2 * 6);
    expect(idsOf(perWorker[0]!, 0).length).toBeGreaterThan(0);

    const full = await collect(createDataLoader(source, options));
    expect(new Set(full.map((r) => r[0])).size).toBe(6);
    for (const stopAfter of [1, 2, 3, 4, 5]) {
      const first = createDataLoader(source, options);
      const head: Batch<unknown>[] = [];
      for await (const b of first) {
        head.push(b);
        if (head.length === stopAfter) break;
      }
      const state = JSON.parse(JSON.stringify(first.state()));
      const resumed = createDataLoader(source, options);
      resumed.restore(state);
      const rest = await collect(resumed);
      const before = await collect((async function* () {
        yield* head;
      })());
      expect([...before, ...rest]).toEqual(full);
      expect(resumed.skips().total).toBe(8); // 4 bad samples per epoch, counted once whatever the interruption point
    }
  });
});
