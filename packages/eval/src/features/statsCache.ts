/**
 * Reference statistics (μ, Σ) cached on disk, keyed by content (APTP.md §8.2: clean-fid `make_custom_stats` once per
 * reference set, reused by every evaluation). The key is the sha256 of the extractor's identity (model file hash +
 * preprocessing) and the sorted sha256 of every reference file's bytes, so renaming files keeps the cache and changing
 * one pixel, the model or the preprocessing invalidates it. Stored as float64 safetensors (`mu`, `sigma`).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { InputError, readSafetensors, writeFileAtomic } from '@aptp/core';
import { gaussianStats } from '../metrics/frechet';
import type { FeatureMatrix, GaussianStats } from '../metrics/frechet';
import type { Float64Linalg } from '../metrics/matmul64';
import { sha256File } from './embed';

/** What the cache needs from a feature extractor (`InceptionFeatures`, `ClipImageFeatures`). */
export interface CacheableExtractor {
  cacheKey(): Promise<string>;
  extractFiles(files: readonly string[], onProgress?: (done: number, total: number) => void, signal?: AbortSignal): Promise<FeatureMatrix>;
}

export interface ReferenceStatsOptions {
  cacheDir: string;
  linalg?: Float64Linalg;
  /** Progress over files hashed, then over images embedded. */
  onProgress?: (stage: 'hash' | 'features', done: number, total: number) => void;
  signal?: AbortSignal;
}

export interface CachedStats extends GaussianStats {
  /** The cache file. */
  file: string;
  /** True when read from the cache. */
  cached: boolean;
}

/** sha256 of the extractor identity and the multiset of file contents. */
export async function statsCacheKey(files: readonly string[], extractorKey: string, onProgress?: (done: number, total: number) => void): Promise<string> {
  const hashes: string[] = [];
  for (let i = 0; i < files.length; i++) {
    hashes.push(await sha256File(files[i]!));
    onProgress?.(i + 1, files.length);
  }
  hashes.sort();
  const h = createHash('sha256');
  h.update(`aptp-stats-v1\n${extractorKey}\n${files.length}\n`);
  for (const x of hashes) h.update(`${x}\n`);
  return h.digest('hex');
}

/** Writes μ and Σ as float64 safetensors (atomic). */
export function writeStats(file: string, s: GaussianStats, metadata: Record<string, string> = {}): void {
  const header = {
    __metadata__: { format: 'aptp-gaussian-stats', count: String(s.count), ...metadata },
    mu: { dtype: 'F64', shape: [s.dim], data_offsets: [0, s.dim * 8] },
    sigma: { dtype: 'F64', shape: [s.dim, s.dim], data_offsets: [s.dim * 8, s.dim * 8 + s.dim * s.dim * 8] },
  };
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  const bytes = (a: Float64Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  writeFileAtomic(file, Buffer.concat([len, Buffer.from(json, 'utf8'), bytes(s.mu), bytes(s.sigma)]));
}

/** Reads statistics written by `writeStats`. */
export function readStats(file: string): GaussianStats {
  const t = readSafetensors(file);
  const mu = t.get('mu');
  const sigma = t.get('sigma');
  if (mu === undefined || sigma === undefined || mu.dtype !== 'float64' || sigma.dtype !== 'float64') {
    throw new InputError('not a statistics file', { file, expected: 'float64 tensors mu [d], sigma [d, d]', found: [...t.keys()] });
  }
  const dim = mu.shape[0]!;
  if (sigma.shape[0] !== dim || sigma.shape[1] !== dim) throw new InputError('sigma does not match mu', { file, field: 'sigma', expected: [dim, dim], found: sigma.shape });
  const head = Buffer.alloc(8);
  const fd = fs.openSync(file, 'r');
  let meta: Record<string, string> | undefined;
  try {
    fs.readSync(fd, head, 0, 8, 0);
    const json = Buffer.alloc(Number(head.readBigUInt64LE(0)));
    fs.readSync(fd, json, 0, json.length, 8);
    meta = (JSON.parse(json.toString('utf8')) as { __metadata__?: Record<string, string> }).__metadata__;
  } finally {
    fs.closeSync(fd);
  }
  return { mu: mu.data as Float64Array, sigma: sigma.data as Float64Array, dim, count: Number(meta?.count ?? 0) };
}

/**
 * μ and Σ of a reference image set under an extractor, from the cache when the same content was seen before,
 * otherwise computed and written to `cacheDir/stats-<key>.safetensors`.
 */
export async function referenceStats(files: readonly string[], extractor: CacheableExtractor, opts: ReferenceStatsOptions): Promise<CachedStats> {
  if (files.length < 2) throw new InputError('reference statistics need at least 2 images', { field: 'files', expected: '>= 2', found: files.length });
  const key = await statsCacheKey(files, await extractor.cacheKey(), (d, t) => opts.onProgress?.('hash', d, t));
  const file = path.join(opts.cacheDir, `stats-${key.slice(0, 32)}.safetensors`);
  if (fs.existsSync(file)) return { ...readStats(file), file, cached: true };
  const features = await extractor.extractFiles(files, (d, t) => opts.onProgress?.('features', d, t), opts.signal);
  const stats = await gaussianStats(features, { linalg: opts.linalg });
  fs.mkdirSync(opts.cacheDir, { recursive: true });
  writeStats(file, stats, { key });
  return { ...stats, file, cached: false };
}
