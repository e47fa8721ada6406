import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as tf from '@tensorflow/tfjs-core';
import { InputError, SafetensorsReader, writeJsonAtomic, writeSafetensors } from '@aptp/core';
import { readJsonFile } from '../io/files';
import { EncodeOptions, PromptEncoder, encodeAsTensor } from './encoder';

/**
 * On-disk embedding cache keyed by (encoder id, prompt). One folder per encoder id under the cache root:
 *
 *   <root>/<slug>-<sha256(id)[:12]>/encoder.json         {"id", "dim"} (checked on open)
 *   <root>/<slug>-<sha256(id)[:12]>/shard-*.safetensors  tensor `embeddings` [N, d] (float32) and metadata `keys`:
 *                                                        JSON list of sha256(prompt) hex digests, row order
 *
 * Shards are immutable and written atomically (temp file + rename), so concurrent readers and crashes never see a
 * torn shard; a crash loses only the embeddings not yet flushed. The index (key → shard, row) is read from the shard
 * headers when the cache opens.
 */
export class EmbeddingCache {
  readonly dir: string;
  readonly encoderId: string;
  readonly dim: number;
  private readonly index = new Map<string, { shard: string; row: number }>();
  private pending = new Map<string, Float32Array>();
  private shardCounter = 0;
  /** Pending rows that trigger an automatic flush. */
  readonly flushEvery: number;

  private constructor(dir: string, encoderId: string, dim: number, flushEvery: number) {
    this.dir = dir;
    this.encoderId = encoderId;
    this.dim = dim;
    this.flushEvery = flushEvery;
  }

  /** Opens (creating if needed) the cache folder of one encoder under `root`. */
  static open(root: string, encoderId: string, dim: number, options: { flushEvery?: number } = {}): EmbeddingCache {
    const slug = encoderId.replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 48);
    const digest = crypto.createHash('sha256').update(encoderId).digest('hex').slice(0, 12);
    const dir = path.join(root, `${slug}-${digest}`);
    fs.mkdirSync(dir, { recursive: true });
    const metaFile = path.join(dir, 'encoder.json');
    if (fs.existsSync(metaFile)) {
      const meta = readJsonFile(metaFile) as { id?: unknown; dim?: unknown };
      if (meta.id !== encoderId || meta.dim !== dim) {
        throw new InputError('embedding cache belongs to another encoder', { file: metaFile, field: 'id', expected: { id: encoderId, dim }, found: { id: meta.id, dim: meta.dim } });
      }
    } else {
      writeJsonAtomic(metaFile, { id: encoderId, dim });
    }
    const cache = new EmbeddingCache(dir, encoderId, dim, options.flushEvery ?? 4096);
    for (const f of fs.readdirSync(dir).filter((n) => /^shard-.*\.safetensors$/.test(n)).sort()) {
      const reader = new SafetensorsReader(path.join(dir, f));
      try {
        const info = reader.info('embeddings');
        let keys: unknown;
        try {
          keys = JSON.parse(reader.metadata['keys'] ?? '[]');
        } catch (err) {
          throw new InputError('corrupt cache shard metadata', { file: path.join(dir, f), field: 'keys', cause: err });
        }
        if (!Array.isArray(keys) || info.shape.length !== 2 || info.shape[0] !== keys.length || info.shape[1] !== dim) {
          throw new InputError('corrupt cache shard', { file: path.join(dir, f), field: 'embeddings', expected: `[${Array.isArray(keys) ? keys.length : '?'}, ${dim}]`, found: info.shape });
        }
        keys.forEach((k, row) => cache.index.set(String(k), { shard: f, row }));
      } finally {
        reader.close();
      }
    }
    return cache;
  }

  static key(prompt: string): string {
    return crypto.createHash('sha256').update(prompt, 'utf8').digest('hex');
  }

  /** Number of cached prompts (flushed and pending). */
  get size(): number {
    let n = this.index.size;
    for (const k of this.pending.keys()) if (!this.index.has(k)) n++;
    return n;
  }

  /** Cached embeddings (or null) for each prompt. */
  get(prompts: readonly string[]): (Float32Array | null)[] {
    const out: (Float32Array | null)[] = new Array(prompts.length).fill(null);
    const byShard = new Map<string, Array<{ i: number; row: number }>>();
    prompts.forEach((p, i) => {
      const k = EmbeddingCache.key(p);
      const pend = this.pending.get(k);
      if (pend) {
        out[i] = pend;
        return;
      }
      const hit = this.index.get(k);
      if (hit) {
        const list = byShard.get(hit.shard) ?? [];
        list.push({ i, row: hit.row });
        byShard.set(hit.shard, list);
      }
    });
    for (const [shard, list] of byShard) {
      const reader = new SafetensorsReader(path.join(this.dir, shard));
      try {
        const data = reader.read('embeddings').data as Float32Array;
        for (const { i, row } of list) out[i] = data.slice(row * this.dim, (row + 1) * this.dim);
      } finally {
        reader.close();
      }
    }
    return out;
  }

  /** Adds embeddings (row-major `[prompts.length, d]`); flushes when `flushEvery` rows are pending. */
  put(prompts: readonly string[], rows: Float32Array): void {
    if (rows.length !== prompts.length * this.dim) throw new InputError('embedding rows do not match the prompts', { field: 'rows', expected: prompts.length * this.dim, found: rows.length });
    prompts.forEach((p, i) => {
      const k = EmbeddingCache.key(p);
      if (!this.index.has(k)) this.pending.set(k, rows.slice(i * this.dim, (i + 1) * this.dim));
    });
    if (this.pending.size >= this.flushEvery) this.flush();
  }

  /** Writes the pending embeddings as one new shard. */
  flush(): void {
    if (this.pending.size === 0) return;
    const keys = [...this.pending.keys()];
    const data = new Float32Array(keys.length * this.dim);
    keys.forEach((k, i) => data.set(this.pending.get(k)!, i * this.dim));
    const name = `shard-${Date.now().toString(36)}-${process.pid}-${(this.shardCounter++).toString(36)}.safetensors`;
    writeSafetensors(path.join(this.dir, name), { embeddings: { dtype: 'float32', shape: [keys.length, this.dim], data } }, { metadata: { keys: JSON.stringify(keys), encoder: this.encoderId } });
    keys.forEach((k, row) => this.index.set(k, { shard: name, row }));
    this.pending = new Map();
  }
}

/** A `PromptEncoder` that serves embeddings from an {@link EmbeddingCache} and encodes only the misses. */
export class CachedPromptEncoder implements PromptEncoder {
  readonly id: string;
  readonly dim: number;
  readonly cache: EmbeddingCache;
  /** Prompts served from the cache / encoded, since creation. */
  hits = 0;
  misses = 0;

  constructor(
    readonly encoder: PromptEncoder,
    cacheRoot: string,
    options: { flushEvery?: number } = {},
  ) {
    this.id = encoder.id;
    this.dim = encoder.dim;
    this.cache = EmbeddingCache.open(cacheRoot, encoder.id, encoder.dim, options);
  }

  async embed(prompts: readonly string[], options: EncodeOptions = {}): Promise<Float32Array> {
    const cached = this.cache.get(prompts);
    const missIdx: number[] = [];
    const missPrompts: string[] = [];
    const seen = new Map<string, number>();
    cached.forEach((c, i) => {
      if (c) return;
      missIdx.push(i);
      if (!seen.has(prompts[i]!)) {
        seen.set(prompts[i]!, missPrompts.length);
        missPrompts.push(prompts[i]!);
      }
    });
    const out = new Float32Array(prompts.length * this.dim);
    cached.forEach((c, i) => c && out.set(c, i * this.dim));
    if (missPrompts.length > 0) {
      const rows = await this.encoder.embed(missPrompts, options);
      this.cache.put(missPrompts, rows);
      for (const i of missIdx) {
        const j = seen.get(prompts[i]!)!;
        out.set(rows.subarray(j * this.dim, (j + 1) * this.dim), i * this.dim);
      }
    }
    this.hits += prompts.length - missIdx.length;
    this.misses += missIdx.length;
    return out;
  }

  encode(prompts: readonly string[], options?: EncodeOptions): Promise<tf.Tensor2D> {
    return encodeAsTensor(this, prompts, options);
  }

  /** Flushes the cache and disposes the wrapped encoder. */
  async dispose(): Promise<void> {
    this.cache.flush();
    await this.encoder.dispose();
  }
}

/** Wraps an encoder with the on-disk cache under `cacheRoot`. */
export function withEmbeddingCache(encoder: PromptEncoder, cacheRoot: string, options: { flushEvery?: number } = {}): CachedPromptEncoder {
  return new CachedPromptEncoder(encoder, cacheRoot, options);
}
