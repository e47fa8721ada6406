import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, InputError, Rng, ShapeError } from '@aptp/core';
import { inputName } from '../image/decode';
import { prepareImage, type ImageTransform } from '../image/transforms';
import { isSkipped, type SkipReason, type SkippedSample, type Source, type SourceRow } from '../source';
import { bufferShuffle, epochPermutation, workerSlice } from './shuffle';
import { SkipLog, type SkipReport } from './skips';

/**
 * Deterministic, resumable batches from any `Source`: seeded shuffling (per epoch), sharding by worker, batching,
 * skipping bad rows (counted, never shifting captions onto other images), and a JSON state a checkpoint stores so
 * that a restored loader continues with exactly the batches an uninterrupted one would have produced.
 *
 * Batches never span epochs; the last batch of an epoch is smaller unless `dropLast`. A skipped row is replaced by
 * the next row of the same worker's order, so batches stay full.
 */
export interface DataLoaderOptions {
  batchSize: number;
  /** Seeds the order and the per-sample transform randomness (reference `--seed 43`, §1.2). */
  seed: number;
  shuffle: boolean;
  transform: ImageTransform;
  /** This worker's index in [0, numWorkers). Indexed sources split rows, sharded sources split shards. */
  workerIndex?: number;
  numWorkers?: number;
  /** Epochs to run; `Infinity` for step-based training. Default 1. */
  epochs?: number;
  dropLast?: boolean;
  /** Shuffle buffer inside a shard (sharded sources). Default 1000. */
  shuffleBuffer?: number;
  /** Rows decoded concurrently (sharp runs on libuv threads). Default min(batchSize, 8). */
  concurrency?: number;
  /** Stops iteration between batches; the state stays at the last yielded batch. */
  signal?: AbortSignal;
}

/** Where the loader stands; JSON, stored in checkpoints. */
export interface DataLoaderState {
  version: 1;
  source: string;
  seed: number;
  shuffle: boolean;
  batchSize: number;
  workerIndex: number;
  numWorkers: number;
  epoch: number;
  /** Indexed: rows consumed in this worker's order of `epoch`. Sharded: shards finished in this worker's list. */
  position: number;
  /** Sharded: rows already consumed from the current shard. */
  inShard: number;
  batches: number;
  samples: number;
  skips: SkipReport;
}

/** A batch: images `[B, 3, H, W]` in [−1, 1] (NCHW, STYLE.md public layout) with their captions. */
export interface Batch<A = unknown> {
  ids: string[];
  captions: string[];
  attributes: (A | undefined)[];
  /** Float pixels `[B, 3, H, W]`, row-major. */
  pixels: Float32Array;
  shape: [number, number, number, number];
  epoch: number;
}

/** The batch images as a tensor; the caller owns (disposes) it. */
export function batchToTensor(batch: Batch<unknown>): tf.Tensor4D {
  return tf.tensor4d(batch.pixels, batch.shape, 'float32');
}

interface Cursor {
  epoch: number;
  position: number;
  inShard: number;
}

type Item<A> =
  | { kind: 'row'; load: () => Promise<SourceRow<A>>; epoch: number; after: Cursor }
  | { kind: 'mark'; after: Cursor }
  | { kind: 'epochEnd'; after: Cursor };

type Prepared<A> =
  | { ok: true; id: string; caption: string; attributes: A | undefined; pixels: Float32Array; width: number; height: number }
  | { ok: false; skip: SkippedSample }
  | { ok: false; error: unknown };

const SKIP_CODES: ReadonlySet<string> = new Set<SkipReason>(['missingImage', 'emptyFile', 'truncatedImage', 'unreadableImage', 'emptyCaption', 'noCaption']);

export class DataLoader<A = unknown> implements AsyncIterable<Batch<A>> {
  private cursor: Cursor = { epoch: 0, position: 0, inShard: 0 };
  private batches = 0;
  private samples = 0;
  private readonly skipLog = new SkipLog();
  private readonly workerIndex: number;
  private readonly numWorkers: number;
  private readonly epochs: number;
  private readonly concurrency: number;

  constructor(
    readonly source: Source<A>,
    private readonly options: DataLoaderOptions,
  ) {
    const { batchSize, seed } = options;
    this.workerIndex = options.workerIndex ?? 0;
    this.numWorkers = options.numWorkers ?? 1;
    this.epochs = options.epochs ?? 1;
    this.concurrency = Math.max(1, options.concurrency ?? Math.min(batchSize, 8));
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new ConfigError('batch size must be a positive integer', { field: 'batchSize', found: batchSize });
    if (!Number.isInteger(seed)) throw new ConfigError('seed must be an integer', { field: 'seed', found: seed });
    if (!Number.isInteger(this.numWorkers) || this.numWorkers < 1) throw new ConfigError('numWorkers must be a positive integer', { field: 'numWorkers', found: this.numWorkers });
    if (!Number.isInteger(this.workerIndex) || this.workerIndex < 0 || this.workerIndex >= this.numWorkers) {
      throw new ConfigError('workerIndex out of range', { field: 'workerIndex', expected: `0..${this.numWorkers - 1}`, found: this.workerIndex });
    }
    if (!(this.epochs >= 1)) throw new ConfigError('epochs must be >= 1', { field: 'epochs', found: this.epochs });
    if (source.kind === 'sharded' && source.shards.length < this.numWorkers) {
      throw new ConfigError('a sharded source needs at least one shard per worker', { field: 'numWorkers', expected: `<= ${source.shards.length} shards`, found: this.numWorkers });
    }
  }

  /** The state after the last yielded batch. */
  state(): DataLoaderState {
    const o = this.options;
    return {
      version: 1,
      source: this.source.name,
      seed: o.seed,
      shuffle: o.shuffle,
      batchSize: o.batchSize,
      workerIndex: this.workerIndex,
      numWorkers: this.numWorkers,
      ...this.cursor,
      batches: this.batches,
      samples: this.samples,
      skips: this.skipLog.snapshot(),
    };
  }

  /** Continues from a stored state. Refuses states of another source, seed, order or batch layout. */
  restore(state: DataLoaderState): void {
    const mine = this.state();
    if (state.version !== 1) throw new ConfigError('unsupported data loader state version', { field: 'version', expected: 1, found: state.version });
    for (const key of ['source', 'seed', 'shuffle', 'batchSize', 'workerIndex', 'numWorkers'] as const) {
      if (state[key] !== mine[key]) throw new ConfigError('data loader state does not match this loader', { field: key, expected: mine[key], found: state[key] });
    }
    this.cursor = { epoch: state.epoch, position: state.position, inShard: state.inShard };
    this.batches = state.batches;
    this.samples = state.samples;
    this.skipLog.restore(state.skips);
  }

  /** Skipped rows so far (cumulative across restores). */
  skips(): SkipReport {
    return this.skipLog.snapshot();
  }

  /** Number of batches per epoch for this worker, when known without reading (indexed sources, no skips). */
  batchesPerEpoch(): number | undefined {
    if (this.source.kind !== 'indexed') return undefined;
    const rows = Math.floor((this.source.length - this.workerIndex + this.numWorkers - 1) / this.numWorkers);
    return this.options.dropLast ? Math.floor(rows / this.options.batchSize) : Math.ceil(rows / this.options.batchSize);
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Batch<A>> {
    const { batchSize, signal } = this.options;
    const items = this.items(this.cursor);
    const queue: { item: Item<A>; prepared?: Promise<Prepared<A>> }[] = [];
    let exhausted = false;
    const fill = async (): Promise<void> => {
      while (!exhausted && queue.length < this.concurrency) {
        const next = await items.next();
        if (next.done) {
          exhausted = true;
          break;
        }
        const item = next.value;
        queue.push({ item, prepared: item.kind === 'row' ? this.prepare(item) : undefined });
      }
    };
    try {
      for (;;) {
        if (signal?.aborted) return;
        const good: Extract<Prepared<A>, { ok: true }>[] = [];
        let batchEpoch = this.cursor.epoch;
        let cursor = this.cursor;
        const skipped: SkippedSample[] = [];
        let endOfData = false;
        while (good.length < batchSize) {
          await fill();
          const head = queue.shift();
          if (!head) {
            endOfData = true;
            break;
          }
          cursor = head.item.after;
          if (head.item.kind === 'mark') continue;
          if (head.item.kind === 'epochEnd') break;
          batchEpoch = head.item.epoch;
          const p = await head.prepared!;
          if (p.ok) good.push(p);
          else if ('skip' in p) skipped.push(p.skip);
          else throw p.error;
        }
        const last = good.length < batchSize;
        for (const s of skipped) this.skipLog.add(s);
        if (good.length === 0 || (last && this.options.dropLast)) {
          this.cursor = cursor;
          if (endOfData) return;
          continue;
        }
        const batch = this.collate(good, batchEpoch);
        this.cursor = cursor;
        this.batches++;
        this.samples += good.length;
        yield batch;
        if (endOfData) return;
      }
    } finally {
      await items.return(undefined);
    }
  }

  private collate(good: Extract<Prepared<A>, { ok: true }>[], epoch: number): Batch<A> {
    const { width, height } = good[0]!;
    const size = 3 * width * height;
    const pixels = new Float32Array(good.length * size);
    good.forEach((g, i) => {
      if (g.width !== width || g.height !== height) {
        throw new ShapeError('images in one batch differ in size (use a transform with resize and crop)', { file: g.id, field: 'image', expected: [3, height, width], found: [3, g.height, g.width] });
      }
      pixels.set(g.pixels, i * size);
    });
    return {
      ids: good.map((g) => g.id),
      captions: good.map((g) => g.caption),
      attributes: good.map((g) => g.attributes),
      pixels,
      shape: [good.length, 3, height, width],
      epoch,
    };
  }

  private async prepare(item: Extract<Item<A>, { kind: 'row' }>): Promise<Prepared<A>> {
    try {
      const row = await item.load();
      if (isSkipped(row)) return { ok: false, skip: row };
      const file = inputName(row.image);
      if (row.caption.trim() === '') return { ok: false, skip: { skip: 'emptyCaption', id: row.id, file, message: 'caption is empty' } };
      const rng = Rng.forKey(this.options.seed, 'transform', item.epoch, row.id);
      try {
        const img = await prepareImage(row.image, this.options.transform, rng);
        return { ok: true, id: row.id, caption: row.caption, attributes: row.attributes, pixels: img.pixels, width: img.width, height: img.height };
      } catch (err) {
        if (err instanceof InputError && SKIP_CODES.has(err.code)) {
          return { ok: false, skip: { skip: err.code as SkipReason, id: row.id, file: err.file ?? file, message: err.message } };
        }
        throw err;
      }
    } catch (err) {
      return { ok: false, error: err };
    }
  }

  /** The worker's rows in order from `start`, with the cursor after each. */
  private async *items(start: Cursor): AsyncGenerator<Item<A>> {
    const { seed, shuffle } = this.options;
    const source = this.source;
    for (let epoch = start.epoch; epoch < this.epochs; epoch++) {
      const first = epoch === start.epoch ? start : { epoch, position: 0, inShard: 0 };
      if (source.kind === 'indexed') {
        const order = shuffle ? epochPermutation(source.length, seed, epoch) : identity(source.length);
        const mine = workerSlice(order, this.workerIndex, this.numWorkers);
        for (let pos = first.position; pos < mine.length; pos++) {
          const index = mine[pos]!;
          yield { kind: 'row', load: () => source.get(index), epoch, after: { epoch, position: pos + 1, inShard: 0 } };
        }
      } else {
        const order = shuffle ? epochPermutation(source.shards.length, seed ^ 0x5bd1e995, epoch) : identity(source.shards.length);
        const mine = workerSlice(order, this.workerIndex, this.numWorkers);
        for (let pos = first.position; pos < mine.length; pos++) {
          const shard = mine[pos]!;
          const rows = source.readShard(shard, this.options.signal);
          const stream = shuffle ? bufferShuffle(rows, this.options.shuffleBuffer ?? 1000, Rng.forKey(seed, 'shardBuffer', epoch, shard)) : rows;
          const skipFirst = pos === first.position ? first.inShard : 0;
          let k = 0;
          for await (const row of stream) {
            k++;
            if (k <= skipFirst) continue;
            yield { kind: 'row', load: () => Promise.resolve(row), epoch, after: { epoch, position: pos, inShard: k } };
          }
          yield { kind: 'mark', after: { epoch, position: pos + 1, inShard: 0 } };
        }
      }
      yield { kind: 'epochEnd', after: { epoch: epoch + 1, position: 0, inShard: 0 } };
    }
  }
}

function identity(n: number): Uint32Array {
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  return p;
}

export function createDataLoader<A>(source: Source<A>, options: DataLoaderOptions): DataLoader<A> {
  return new DataLoader(source, options);
}
