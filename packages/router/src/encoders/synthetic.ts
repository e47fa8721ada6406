import { ConfigError, Rng } from '@aptp/core';
import { EncodeOptions, PromptEncoder, encodeAsTensor } from './encoder';
import type * as tf from '@tensorflow/tfjs-core';

/**
 * A deterministic, offline prompt encoder for the built-in synthetic world (no weights, no downloads): a hashed
 * bag of words and word bigrams under a fixed seeded random projection.
 *
 *   words(p)    = the NFKC-normalised, lower-cased runs of letters/digits of the prompt, in order;
 *   features(p) = every word (weight 1) and every pair of adjacent words "w₁ w₂" (weight `bigramWeight`, 0.5);
 *   v(f)        = a standard-normal vector in R^d drawn from `Rng.forKey(seed, 'synthetic-encoder', f)` — i.e. column f
 *                 of a fixed d × ∞ Gaussian projection of the one-hot feature space, generated on demand;
 *   z(p)        = Σ_f weight_f · v(f) / Σ_f weight_f   (a weighted mean, like the reference's mean pooling; not
 *                 L2-normalised; the empty prompt maps to 0).
 *
 * Prompts sharing words get correlated embeddings (cosine ≈ shared feature weight / total weight), word order matters
 * through the bigrams, and the result is identical on every machine and backend (plain JavaScript, float64 sums
 * rounded once to float32).
 */
export interface SyntheticEncoderOptions {
  /** Embedding width (default 768, the all-mpnet-base-v2 width the reference predictor expects). */
  dim?: number;
  /** Projection seed (default 0). */
  seed?: number;
  /** Weight of a bigram relative to a word (default 0.5). */
  bigramWeight?: number;
}

const MAX_CACHED_FEATURES = 200_000;

export class SyntheticPromptEncoder implements PromptEncoder {
  readonly id: string;
  readonly dim: number;
  readonly seed: number;
  readonly bigramWeight: number;
  private readonly features = new Map<string, Float64Array>();

  constructor(options: SyntheticEncoderOptions = {}) {
    this.dim = options.dim ?? 768;
    this.seed = options.seed ?? 0;
    this.bigramWeight = options.bigramWeight ?? 0.5;
    if (!(Number.isInteger(this.dim) && this.dim > 0)) throw new ConfigError('dim must be a positive integer', { field: 'dim', found: this.dim });
    if (!Number.isInteger(this.seed)) throw new ConfigError('seed must be an integer', { field: 'seed', found: this.seed });
    if (!(this.bigramWeight >= 0) || !Number.isFinite(this.bigramWeight)) throw new ConfigError('bigramWeight must be ≥ 0', { field: 'bigramWeight', found: this.bigramWeight });
    this.id = `synthetic-bow-v1:d=${this.dim}:seed=${this.seed}:bigram=${this.bigramWeight}`;
  }

  /** The words of a prompt (the tokenisation the features are built from). */
  static words(prompt: string): string[] {
    return prompt.normalize('NFKC').toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? [];
  }

  /** One embedding (float64 accumulation). */
  embedOne(prompt: string): Float32Array {
    const words = SyntheticPromptEncoder.words(prompt);
    const acc = new Float64Array(this.dim);
    let total = 0;
    const add = (feature: string, weight: number): void => {
      if (weight === 0) return;
      const v = this.feature(feature);
      for (let i = 0; i < this.dim; i++) acc[i] += weight * v[i]!;
      total += weight;
    };
    words.forEach((w, i) => {
      add(w, 1);
      if (i > 0) add(`${words[i - 1]} ${w}`, this.bigramWeight);
    });
    const out = new Float32Array(this.dim);
    if (total > 0) for (let i = 0; i < this.dim; i++) out[i] = acc[i]! / total;
    return out;
  }

  async embed(prompts: readonly string[], options: EncodeOptions = {}): Promise<Float32Array> {
    const out = new Float32Array(prompts.length * this.dim);
    prompts.forEach((p, b) => {
      if (options.signal?.aborted) throw options.signal.reason ?? new Error('aborted');
      out.set(this.embedOne(p), b * this.dim);
    });
    options.onProgress?.({ label: 'encode', done: prompts.length, total: prompts.length });
    return out;
  }

  encode(prompts: readonly string[], options?: EncodeOptions): Promise<tf.Tensor2D> {
    return encodeAsTensor(this, prompts, options);
  }

  async dispose(): Promise<void> {
    this.features.clear();
  }

  private feature(f: string): Float64Array {
    let v = this.features.get(f);
    if (!v) {
      v = Float64Array.from(Rng.forKey(this.seed, 'synthetic-encoder', f).normal(this.dim));
      if (this.features.size >= MAX_CACHED_FEATURES) this.features.clear();
      this.features.set(f, v);
    }
    return v;
  }
}
