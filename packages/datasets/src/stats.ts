import { InputError } from '@aptp/core';
import { decodeImage, imageSize } from './image/decode';
import { SkipLog, formatSkipReport, type SkipReport } from './iterate/skips';
import { isSkipped, type SkipReason, type Source, type SourceInfo, type SourceRow } from './source';

/**
 * Statistics of a data set, read in source order: rows, skipped rows (by reason, first few files), caption lengths,
 * distinct captions, image sizes (when decoding) and, for rows carrying a `category` attribute (synthetic world),
 * counts per category. Packages never print: `formatDatasetStats` gives the text an app prints.
 */
export interface DatasetStats {
  name: string;
  format: string;
  /** Rows (indexed) or undefined (sharded: unknown without reading everything). */
  rows?: number;
  shards?: number;
  /** Rows examined. */
  examined: number;
  usable: number;
  skips: SkipReport;
  captionChars: { min: number; mean: number; max: number };
  captionWords: { min: number; mean: number; max: number };
  distinctCaptions: number;
  imageSides?: { minShort: number; maxLong: number; meanWidth: number; meanHeight: number };
  categories?: Record<string, number>;
  notes: SourceInfo['notes'];
}

export interface DatasetStatsOptions {
  /** Rows to examine (default: all). */
  limit?: number;
  /** Decode every image (finds truncated/corrupt files; slower). Default true. */
  decode?: boolean;
  signal?: AbortSignal;
  onProgress?: (examined: number, total: number | undefined) => void;
}

async function* rowsOf(source: Source<unknown>, limit: number, signal?: AbortSignal): AsyncGenerator<SourceRow<unknown>> {
  let n = 0;
  if (source.kind === 'indexed') {
    for (let i = 0; i < source.length && n < limit; i++, n++) {
      if (signal?.aborted) return;
      yield await source.get(i);
    }
    return;
  }
  for (let s = 0; s < source.shards.length && n < limit; s++) {
    for await (const row of source.readShard(s, signal)) {
      if (n++ >= limit) return;
      yield row;
    }
  }
}

export async function datasetStats(source: Source<unknown>, options: DatasetStatsOptions = {}): Promise<DatasetStats> {
  const limit = options.limit ?? Infinity;
  const decode = options.decode ?? true;
  const info = source.info();
  const skips = new SkipLog();
  const captions = new Set<string>();
  const chars = { min: Infinity, sum: 0, max: 0 };
  const words = { min: Infinity, sum: 0, max: 0 };
  const sides = { minShort: Infinity, maxLong: 0, sumW: 0, sumH: 0 };
  const categories: Record<string, number> = {};
  let examined = 0;
  let usable = 0;
  const total = source.kind === 'indexed' ? Math.min(source.length, limit) : undefined;
  for await (const row of rowsOf(source, limit, options.signal)) {
    examined++;
    options.onProgress?.(examined, total);
    if (isSkipped(row)) {
      skips.add(row);
      continue;
    }
    if (row.caption.trim() === '') {
      skips.add({ skip: 'emptyCaption', id: row.id, file: row.image.kind === 'file' ? row.image.path : row.image.name, message: 'caption is empty' });
      continue;
    }
    if (decode) {
      try {
        const size = await imageSize(row.image);
        await decodeImage(row.image, { resize: { width: 8, height: 8 } });
        sides.minShort = Math.min(sides.minShort, size.width, size.height);
        sides.maxLong = Math.max(sides.maxLong, size.width, size.height);
        sides.sumW += size.width;
        sides.sumH += size.height;
      } catch (err) {
        if (!(err instanceof InputError)) throw err;
        skips.add({ skip: err.code as SkipReason, id: row.id, file: err.file ?? row.id, message: err.message });
        continue;
      }
    }
    usable++;
    captions.add(row.caption);
    const c = row.caption.length;
    const w = row.caption.split(/\s+/).filter((s) => s !== '').length;
    chars.min = Math.min(chars.min, c);
    chars.max = Math.max(chars.max, c);
    chars.sum += c;
    words.min = Math.min(words.min, w);
    words.max = Math.max(words.max, w);
    words.sum += w;
    const category = (row.attributes as { category?: unknown } | undefined)?.category;
    if (typeof category === 'string') categories[category] = (categories[category] ?? 0) + 1;
  }
  const mean = (s: number): number => (usable > 0 ? s / usable : 0);
  const stats: DatasetStats = {
    name: source.name,
    format: info.format,
    examined,
    usable,
    skips: skips.snapshot(),
    captionChars: { min: usable ? chars.min : 0, mean: mean(chars.sum), max: chars.max },
    captionWords: { min: usable ? words.min : 0, mean: mean(words.sum), max: words.max },
    distinctCaptions: captions.size,
    notes: info.notes,
  };
  if (source.kind === 'indexed') stats.rows = source.length;
  else stats.shards = source.shards.length;
  if (decode && usable > 0) stats.imageSides = { minShort: sides.minShort, maxLong: sides.maxLong, meanWidth: sides.sumW / usable, meanHeight: sides.sumH / usable };
  if (Object.keys(categories).length > 0) stats.categories = categories;
  return stats;
}

export function formatDatasetStats(s: DatasetStats): string {
  const f = (x: number): string => (Number.isInteger(x) ? String(x) : x.toFixed(1));
  const lines = [
    `${s.name} (${s.format})${s.rows !== undefined ? `: ${s.rows} rows` : ''}${s.shards !== undefined ? `: ${s.shards} shards` : ''}`,
    `examined ${s.examined}, usable ${s.usable}, ${formatSkipReport(s.skips)}`,
    `captions: ${s.distinctCaptions} distinct; chars min/mean/max ${f(s.captionChars.min)}/${f(s.captionChars.mean)}/${f(s.captionChars.max)}; words ${f(s.captionWords.min)}/${f(s.captionWords.mean)}/${f(s.captionWords.max)}`,
  ];
  if (s.imageSides) lines.push(`images: shorter side >= ${s.imageSides.minShort}, longer side <= ${s.imageSides.maxLong}, mean ${f(s.imageSides.meanWidth)}x${f(s.imageSides.meanHeight)}`);
  if (s.categories) lines.push(`categories: ${Object.entries(s.categories).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  for (const [k, v] of Object.entries(s.notes)) lines.push(`${k}: ${v.count} (e.g. ${v.examples.join(', ')})`);
  return lines.join('\n');
}
