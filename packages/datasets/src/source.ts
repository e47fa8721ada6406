/**
 * The one shape every data set has (APTP.md §7): rows of `{ id, caption, image }`, read lazily so images are never
 * all in memory. Two access modes:
 * - `IndexedSource`: a known number of rows with random access (`get(i)`), so a seeded permutation can shuffle the
 *   whole set and an iterator can resume at any position (CC3M, COCO 2014, COCO-30k, image folders, synthetic).
 * - `ShardedSource`: a list of shards, each read front to back (WebDataset .tar files); shuffling permutes shards
 *   and mixes samples inside a shard through a bounded buffer.
 */

/** 8-bit RGB pixels, row-major HWC (`data.length === width * height * 3`). */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}

/** Where a row's image comes from: a file, bytes read from an archive, or pixels made on the fly. */
export type ImageInput =
  | { kind: 'file'; path: string }
  | { kind: 'bytes'; bytes: Uint8Array; name: string }
  | { kind: 'pixels'; image: RgbImage; name: string };

/** One data set row before decoding. `id` is stable across runs (row index, annotation id, tar key). */
export interface RawSample<A = unknown> {
  id: string;
  caption: string;
  image: ImageInput;
  /** Ground truth that comes with the row (synthetic world attributes; COCO image id). */
  attributes?: A;
}

/** Why a row was dropped. Bad rows are skipped and counted, never thrown (STYLE.md §3 Errors). */
export type SkipReason = 'missingImage' | 'emptyFile' | 'truncatedImage' | 'unreadableImage' | 'emptyCaption' | 'noCaption';

export interface SkippedSample {
  skip: SkipReason;
  id: string;
  /** The file (or archive member) the problem is in. */
  file: string;
  message: string;
}

export type SourceRow<A = unknown> = RawSample<A> | SkippedSample;

export function isSkipped(row: SourceRow<unknown>): row is SkippedSample {
  return (row as SkippedSample).skip !== undefined;
}

/** Facts a source learned while opening (e.g. TSV rows without a downloaded image). */
export interface SourceInfo {
  format: string;
  /** Rows the iterator visits (indexed sources) or shards (sharded sources). */
  rows?: number;
  shards?: number;
  /** Counts of problems found while indexing, by name, with the first few files. */
  notes: Record<string, { count: number; examples: string[] }>;
}

export interface IndexedSource<A = unknown> {
  readonly kind: 'indexed';
  readonly name: string;
  readonly length: number;
  /** Row `index` in [0, length). Never throws for bad data: returns a `SkippedSample` instead. */
  get(index: number): Promise<SourceRow<A>>;
  info(): SourceInfo;
}

export interface ShardedSource<A = unknown> {
  readonly kind: 'sharded';
  readonly name: string;
  /** Shard file paths, in a fixed order. */
  readonly shards: readonly string[];
  /** The rows of one shard in archive order. */
  readShard(shard: number, signal?: AbortSignal): AsyncIterable<SourceRow<A>>;
  info(): SourceInfo;
}

export type Source<A = unknown> = IndexedSource<A> | ShardedSource<A>;

/** Keeps the first `limit` examples of each note. */
export function addNote(notes: SourceInfo['notes'], name: string, example: string, limit = 5): void {
  const n = (notes[name] ??= { count: 0, examples: [] });
  n.count++;
  if (n.examples.length < limit) n.examples.push(example);
}
