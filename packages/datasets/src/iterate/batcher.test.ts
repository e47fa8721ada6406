import fc from 'fast-check';
import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, ShapeError } from '@aptp/core';
import { describeBackends, expectNoTensorLeak } from '@aptp/core/testing';
import { transformPreset } from '../image/transforms';
import type { IndexedSource, RgbImage, SourceRow } from '../source';
import { batchToTensor, createDataLoader, type Batch, type DataLoaderOptions } from './batcher';

/** Row i: a w×h image whose pixel (x, y) = (i, x * 10 + y, 200) — row identity and geometry stay visible. */
function fakeSource(n: number, bad: ReadonlySet<number> = new Set(), size = (_: number) => [12, 10] as [number, number]): IndexedSource<{ i: number }> {
  return {
    kind: 'indexed',
    name: `fake/${n}`,
    length: n,
    info: () => ({ format: 'fake', rows: n, notes: {} }),
    async get(i: number): Promise<SourceRow<{ i: number }>> {
      if (bad.has(i) && i % 2 === 0) return { skip: 'missingImage', id: `row${i}`, file: `img${i}.jpg`, message: 'gone' };
      if (bad.has(i)) return { id: `row${i}`, caption: `caption ${i}`, image: { kind: 'bytes', bytes: new TextEncoder().encode('not an image'), name: `img${i}.jpg` } };
      const [w, h] = size(i);
      const data = new Uint8Array(w * h * 3);
      for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) data.set([i % 256, x * 10 + y, 200], (y * w + x) * 3);
      const image: RgbImage = { width: w, height: h, data };
      return { id: `row${i}`, caption: `caption ${i}`, image: { kind: 'pixels', image, name: `img${i}` }, attributes: { i } };
    },
  };
}

const base: DataLoaderOptions = { batchSize: 4, seed: 43, shuffle: true, transform: transformPreset('synthetic') };

async function all<A>(it: AsyncIterable<Batch<A>>): Promise<Batch<A>[]> {
  const out: Batch<A>[] = [];
  for await (const b of it) out.push(b);
  return out;
}
const ids = (bs: Batch<unknown>[]): string[] => bs.flatMap((b) => b.ids);

describe('DataLoader', () => {
  it('batches in order without shuffling; the last batch of an epoch is smaller unless dropLast', async () => {
    const bs = await all(createDataLoader(fakeSource(10), { ...base, shuffle: false }));
    expect(bs.map((b) => b.shape)).toEqual([
      [4, 3, 10, 12],
      [4, 3, 10, 12],
      [2, 3, 10, 12],
    ]);
    expect(ids(bs)).toEqual(Array.from({ length: 10 }, (_, i) => `row${i}`));
    expect(bs[0]!.captions[1]).toBe('caption 1');
    expect(bs[0]!.pixels[1 * 360 + 0]).toBeCloseTo(1 / 127.5 - 1, 6); // R of row 1 = 1
    expect(bs[0]!.pixels[1 * 360 + 120 + 12 * 2 + 3]).toBeCloseTo(32 / 127.5 - 1, 6); // G at (x 3, y 2) = 32
    const dropped = await all(createDataLoader(fakeSource(10), { ...base, shuffle: false, dropLast: true }));
    expect(dropped.map((b) => b.shape[0])).toEqual([4, 4]);
    expect(createDataLoader(fakeSource(10), { ...base, dropLast: true }).batchesPerEpoch()).toBe(2);
  });

  it('shuffles each epoch into a different permutation, reproducibly per seed; batches never span epochs', async () => {
    const run = async (seed: number) => all(createDataLoader(fakeSource(10), { ...base, seed, epochs: 3 }));
    const a = await run(1);
    const b = await run(1);
    const c = await run(2);
    expect(ids(a)).toEqual(ids(b));
    expect(ids(a)).not.toEqual(ids(c));
    expect(a.map((x) => x.epoch)).toEqual([0, 0, 0, 1, 1, 1, 2, 2, 2]);
    const epochs = [0, 1, 2].map((e) => ids(a.filter((x) => x.epoch === e)));
    for (const e of epochs) expect([...e].sort()).toEqual(Array.from({ length: 10 }, (_, i) => `row${i}`).sort());
    expect(epochs[0]).not.toEqual(epochs[1]);
  });

  it('splits rows between workers: disjoint, together the whole epoch', async () => {
    const per = await Promise.all([0, 1, 2].map((w) => all(createDataLoader(fakeSource(11), { ...base, workerIndex: w, numWorkers: 3 }))));
    const lists = per.map(ids);
    expect(lists.map((l) => l.length)).toEqual([4, 4, 3]);
    expect(lists.flat().sort()).toEqual(Array.from({ length: 11 }, (_, i) => `row${i}`).sort());
    expect(() => createDataLoader(fakeSource(3), { ...base, workerIndex: 3, numWorkers: 3 })).toThrow(ConfigError);
  });

  it('skips bad rows, counts them, and refills the batch from the following rows', async () => {
    const bad = new Set([1, 2, 5]);
    const loader = createDataLoader(fakeSource(9, bad), { ...base, shuffle: false, batchSize: 3 });
    const bs = await all(loader);
    expect(bs.map((b) => b.ids)).toEqual([
      ['row0', 'row3', 'row4'],
      ['row6', 'row7', 'row8'],
    ]);
    // captions and images stay paired: R channel = row index
    bs.forEach((b) => b.ids.forEach((id, k) => expect(Math.round((b.pixels[k * 360]! + 1) * 127.5)).toBe(Number(id.slice(3)))));
    const skips = loader.skips();
    expect(skips.byReason).toEqual({ unreadableImage: 2, missingImage: 1 });
    expect(skips.examples.map((e) => e.file)).toEqual(['img1.jpg', 'img2.jpg', 'img5.jpg']);
  });

  it('gives each sample the same crop and flip whatever the batch size or number of workers', async () => {
    const train = { ...base, transform: transformPreset('train', 8) };
    const byId = (bs: Batch<unknown>[]) => new Map(bs.flatMap((b) => b.ids.map((id, k) => [id, Array.from(b.pixels.subarray(k * 192, (k + 1) * 192))] as const)));
    const one = byId(await all(createDataLoader(fakeSource(12), { ...train, batchSize: 5 })));
    const two = byId((await Promise.all([0, 1].map((w) => all(createDataLoader(fakeSource(12), { ...train, batchSize: 2, workerIndex: w, numWorkers: 2 }))))).flat());
    expect(one.size).toBe(12);
    for (const [id, px] of one) expect(two.get(id)).toEqual(px);
    // and the augmentation really varies between samples (crops/flips differ → G-channel patterns differ)
    const patterns = new Set([...one.values()].map((p) => p.slice(64, 72).join(',')));
    expect(patterns.size).toBeGreaterThan(2);
  });

  it('resume from a stored state = uninterrupted run (property, fixed seed)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          n: fc.integer({ min: 1, max: 23 }),
          batchSize: fc.integer({ min: 1, max: 5 }),
          numWorkers: fc.integer({ min: 1, max: 3 }),
          epochs: fc.integer({ min: 1, max: 3 }),
          shuffle: fc.boolean(),
          dropLast: fc.boolean(),
          bad: fc.uniqueArray(fc.integer({ min: 0, max: 22 }), { maxLength: 5 }),
          stopAfter: fc.integer({ min: 0, max: 12 }),
          seed: fc.integer({ min: 0, max: 1000 }),
        }),
        async (p) => {
          const workerIndex = p.numWorkers - 1;
          const source = fakeSource(p.n, new Set(p.bad));
          const opts: DataLoaderOptions = { ...base, batchSize: p.batchSize, numWorkers: p.numWorkers, workerIndex, epochs: p.epochs, shuffle: p.shuffle, dropLast: p.dropLast, seed: p.seed };
          const full = await all(createDataLoader(source, opts));
          const first = createDataLoader(source, opts);
          const head: Batch<unknown>[] = [];
          if (p.stopAfter > 0) {
            for await (const b of first) {
              head.push(b);
              if (head.length >= p.stopAfter) break;
            }
          }
          const resumed = createDataLoader(source, opts);
          resumed.restore(JSON.parse(JSON.stringify(first.state())));
          const rest = await all(resumed);
          expect([...head, ...rest]).toEqual(full);
          const uninterrupted = createDataLoader(source, opts);
          await all(uninterrupted);
          expect(resumed.state()).toEqual(uninterrupted.state());
        },
      ),
      { seed: 20250211, numRuns: 50 },
    );
  });

  it('refuses a state from another configuration', async () => {
    const a = createDataLoader(fakeSource(5), base);
    const b = createDataLoader(fakeSource(5), { ...base, seed: 44 });
    expect(() => b.restore(a.state())).toThrow(/seed: data loader state does not match this loader: expected 44, found 43/);
  });

  it('stops between batches when aborted, keeping the state at the last batch', async () => {
    const ac = new AbortController();
    const loader = createDataLoader(fakeSource(20), { ...base, signal: ac.signal });
    const got: Batch<unknown>[] = [];
    for await (const b of loader) {
      got.push(b);
      if (got.length === 2) ac.abort();
    }
    expect(got.length).toBe(2);
    expect(loader.state()).toMatchObject({ batches: 2, samples: 8, position: 8 });
  });

  it('rejects batches of differently sized images with a ShapeError naming the sample', async () => {
    const source = fakeSource(4, new Set(), (i) => (i === 2 ? [9, 9] : [12, 10]));
    await expect(all(createDataLoader(source, { ...base, shuffle: false }))).rejects.toThrow(ShapeError);
    await expect(all(createDataLoader(source, { ...base, shuffle: false }))).rejects.toThrow(/row2/);
  });
});

describeBackends('batchToTensor', () => {
  it('makes a [B, 3, H, W] tensor equal to the batch pixels, without leaking', async () => {
    const [batch] = await all(createDataLoader(fakeSource(3), { ...base, shuffle: false }));
    const t = batchToTensor(batch!);
    expect(t.shape).toEqual([3, 3, 10, 12]);
    expect(Array.from(await t.data())).toEqual(Array.from(batch!.pixels));
    t.dispose();
    await expectNoTensorLeak(async () => {
      for await (const b of createDataLoader(fakeSource(6), { ...base, batchSize: 2 })) {
        const x = batchToTensor(b);
        tf.tidy(() => tf.mean(x).dataSync());
        x.dispose();
      }
    });
  });
});
