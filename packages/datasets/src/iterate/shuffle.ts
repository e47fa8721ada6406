import { Rng } from '@aptp/core';

/**
 * Seeded orderings. Indexed sources get a full Fisher–Yates permutation per epoch (`Uint32Array`, 4 bytes a row);
 * sharded sources get a shard permutation per epoch plus a bounded shuffle buffer inside each shard.
 */

/** A permutation of 0..n-1 for (seed, epoch), identical on every machine and worker. */
export function epochPermutation(n: number, seed: number, epoch: number): Uint32Array {
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  const rng = Rng.forKey(seed, 'shuffle', epoch);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.nextInt(i + 1);
    const t = p[i]!;
    p[i] = p[j]!;
    p[j] = t;
  }
  return p;
}

/** The rows worker `worker` of `numWorkers` visits, in order: every numWorkers-th entry of `order`. */
export function workerSlice(order: Uint32Array, worker: number, numWorkers: number): Uint32Array {
  const n = Math.floor((order.length - worker + numWorkers - 1) / numWorkers);
  const out = new Uint32Array(Math.max(0, n));
  for (let k = 0; k < out.length; k++) out[k] = order[worker + k * numWorkers]!;
  return out;
}

/**
 * Bounded shuffle buffer (WebDataset style): fill up to `size` items, then each incoming item replaces a random one
 * that is emitted; at the end the rest drains in random order. Deterministic for a given rng and input order, so a
 * resumed reader can replay a shard and drop what was already emitted.
 */
export async function* bufferShuffle<T>(items: AsyncIterable<T>, size: number, rng: Rng): AsyncGenerator<T> {
  if (size <= 1) {
    yield* items;
    return;
  }
  const buf: T[] = [];
  for await (const item of items) {
    if (buf.length < size) {
      buf.push(item);
      continue;
    }
    const j = rng.nextInt(size);
    const out = buf[j]!;
    buf[j] = item;
    yield out;
  }
  while (buf.length > 0) {
    const j = rng.nextInt(buf.length);
    const out = buf[j]!;
    buf[j] = buf[buf.length - 1]!;
    buf.pop();
    yield out;
  }
}
