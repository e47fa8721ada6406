import * as tf from '@tensorflow/tfjs-core';
import { ConfigError } from '../errors';

/**
 * Seeded random numbers, in plain JavaScript so every backend sees the same values for the same seed
 * (STYLE.md: never `tf.random*`). Generator: xoshiro128** (32-bit state words), seeded through a
 * SplitMix32-style hash of (seed, ...keys), so streams keyed per sample (`Rng.forKey(seed, 'noise', i)`) do not
 * depend on batch composition.
 */
export interface RngState {
  /** Four uint32 words of xoshiro128** state. */
  s: [number, number, number, number];
  /** A cached second Box–Muller normal, or null. */
  spare: number | null;
}

function mix32(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

function hashKey(key: number | string): number {
  if (typeof key === 'number') {
    if (!Number.isFinite(key)) throw new ConfigError('RNG key must be finite', { field: 'seed', found: key });
    // Mix both 32-bit halves of integers up to 2^53 so large seeds still differ.
    const lo = key >>> 0;
    const hi = Math.floor(key / 4294967296) >>> 0;
    return mix32(lo ^ mix32(hi + 0x9e3779b9));
  }
  let h = 0x811c9dc5; // FNV-1a
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return mix32(h >>> 0);
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

export class Rng {
  private s: [number, number, number, number];
  private spare: number | null = null;

  private constructor(s: [number, number, number, number]) {
    this.s = s;
    if ((s[0] | s[1] | s[2] | s[3]) === 0) this.s = [0x9e3779b9, 0x243f6a88, 0xb7e15162, 0x6a09e667];
  }

  /** A generator for `seed` and an optional path of keys, e.g. `Rng.forKey(43, 'timestep', sampleIndex)`. */
  static forKey(seed: number, ...keys: (number | string)[]): Rng {
    let h = hashKey(seed);
    for (const k of keys) h = mix32(h ^ hashKey(k) ^ 0x27d4eb2f);
    const s: [number, number, number, number] = [0, 0, 0, 0];
    for (let i = 0; i < 4; i++) {
      h = (h + 0x9e3779b9) >>> 0;
      s[i] = mix32(h);
    }
    return new Rng(s);
  }

  static fromState(state: RngState): Rng {
    const r = new Rng([...state.s]);
    r.spare = state.spare;
    return r;
  }

  getState(): RngState {
    return { s: [...this.s], spare: this.spare };
  }

  /** An independent child stream derived from this stream's next output and the keys. */
  fork(...keys: (number | string)[]): Rng {
    return Rng.forKey(this.nextUint32(), ...keys);
  }

  nextUint32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] = (s[2] ^ s[0]) >>> 0;
    s[3] = (s[3] ^ s[1]) >>> 0;
    s[1] = (s[1] ^ s[2]) >>> 0;
    s[0] = (s[0] ^ s[3]) >>> 0;
    s[2] = (s[2] ^ t) >>> 0;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** Uniform double in [0, 1) with 53 random bits. */
  nextDouble(): number {
    const hi = this.nextUint32() >>> 5; // 27 bits
    const lo = this.nextUint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Uniform double in (0, 1), never 0 (safe under log). */
  nextOpenDouble(): number {
    let u = this.nextDouble();
    while (u === 0) u = this.nextDouble();
    return u;
  }

  /** Standard normal (Box–Muller, both values used). */
  nextNormal(): number {
    if (this.spare !== null) {
      const v = this.spare;
      this.spare = null;
      return v;
    }
    const u1 = this.nextOpenDouble();
    const u2 = this.nextDouble();
    const r = Math.sqrt(-2 * Math.log(u1));
    this.spare = r * Math.sin(2 * Math.PI * u2);
    return r * Math.cos(2 * Math.PI * u2);
  }

  /** Integer in [0, n). */
  nextInt(n: number): number {
    if (!(Number.isInteger(n) && n > 0)) throw new ConfigError('nextInt bound must be a positive integer', { field: 'n', found: n });
    return Math.floor(this.nextDouble() * n);
  }

  uniform(n: number, low = 0, high = 1): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = low + (high - low) * this.nextDouble();
    return out;
  }

  normal(n: number, mean = 0, std = 1): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = mean + std * this.nextNormal();
    return out;
  }

  /** Standard Gumbel samples −log(−log(u)), u ∈ (0, 1). */
  gumbel(n: number): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = -Math.log(-Math.log(this.nextOpenDouble()));
    return out;
  }

  /** A uniformly random permutation of 0..n-1 (Fisher–Yates). */
  permutation(n: number): number[] {
    const p = Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
      const j = this.nextInt(i + 1);
      [p[i], p[j]] = [p[j]!, p[i]!];
    }
    return p;
  }

  /** A tfjs tensor of standard normals (caller owns it). */
  normalTensor(shape: number[]): tf.Tensor {
    return tf.tensor(this.normal(shape.reduce((a, b) => a * b, 1)), shape, 'float32');
  }

  uniformTensor(shape: number[], low = 0, high = 1): tf.Tensor {
    return tf.tensor(this.uniform(shape.reduce((a, b) => a * b, 1), low, high), shape, 'float32');
  }
}
