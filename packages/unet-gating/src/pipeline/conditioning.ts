import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { z } from 'zod';
import { ConfigError, InputError, Rng, writeJsonAtomic } from '@aptp/core';
import type { HostArray } from '../engines/engine';

/**
 * Text conditioning of the UNet (`encoder_hidden_states`, `[B, S, D]` with D = `cross_attention_dim`).
 *
 * {@link TextConditioner} is the interface every prompt encoder implements: the CLIP text encoder of SD 2.1 (run on
 * ORT, `clipText.ts`) and the weight-free {@link HashedTextConditioner} of the synthetic world defined here.
 *
 * HashedTextConditioner (the text encoder of the synthetic-world teacher; nothing is trained, nothing downloaded):
 *   1. tokens: the prompt split on every character that is not a letter or digit; a token is lower-cased unless it
 *      is a single upper-case letter or digit (so the glyph "A" of "the letter A" differs from the article "a");
 *   2. sequence: `<bos>`, the first S−2 tokens, `<eos>`, then zero vectors up to S (S = `sequenceLength`);
 *   3. each non-padding position p holding token w gets  e(w) + positionScale · PE(p), where e(w) ~ N(0, I_D) is drawn
 *      from `Rng.forKey(seed, 'conditioning', 'token', w)` (a seeded hash of the word: any word has a vector, no
 *      vocabulary) and PE is the sinusoidal encoding of Vaswani et al. 2017 (sin on even, cos on odd dims);
 *   4. padding positions are exactly zero, so the empty prompt "" (classifier-free guidance) is `<bos>`, `<eos>`, 0….
 * The encoding of a prompt never depends on the other prompts of the batch. Random 64-d word vectors of a ~300-word
 * vocabulary are nearly orthogonal, so the UNet's cross-attention projections can learn any use of them; the
 * positional term lets it bind attributes to the right object ("a red circle left of a blue square").
 */

/** Prompts → `[B, S, D]` text states (the caller owns the tensor). */
export interface TextConditioner {
  /** S: tokens per prompt. */
  readonly sequenceLength: number;
  /** D: width of each token state (the UNet's `cross_attention_dim`). */
  readonly dim: number;
  encode(prompts: readonly string[], options?: { signal?: AbortSignal }): Promise<tf.Tensor3D>;
  /** The same on the host (`[B, S, D]`), for ORT engines. */
  embed(prompts: readonly string[], options?: { signal?: AbortSignal }): Promise<HostArray>;
  dispose(): void | Promise<void>;
}

export const CONDITIONING_FILES = { dir: 'conditioning', config: 'config.json' } as const;

export const hashedTextConditionerSchema = z.strictObject({
  type: z.literal('hashedWords').describe('the weight-free synthetic-world encoder'),
  seed: z.number().int().min(0).default(0).describe('seed of the word vectors'),
  sequenceLength: z.number().int().min(2).max(1024).default(24).describe('S: tokens per prompt (<bos> + words + <eos> + padding)'),
  dim: z.number().int().min(2).max(4096).default(64).describe("D: must equal the UNet's cross_attention_dim"),
  positionScale: z.number().min(0).default(0.5).describe('weight of the sinusoidal position encoding'),
});
export type HashedTextConditionerConfig = z.output<typeof hashedTextConditionerSchema>;
export type HashedTextConditionerConfigInput = Omit<z.input<typeof hashedTextConditionerSchema>, 'type'> & { type?: 'hashedWords' };

/** Validates a conditioner config; errors name the field (and the file, if given). */
export function parseConditioningConfig(raw: unknown, file?: string): HashedTextConditionerConfig {
  const input = raw !== null && typeof raw === 'object' && !Array.isArray(raw) ? Object.fromEntries(Object.entries(raw).filter(([k]) => !k.startsWith('_'))) : raw;
  const r = hashedTextConditionerSchema.safeParse(input);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const field = issue.code === 'unrecognized_keys' ? (issue as { keys: string[] }).keys.join(', ') : issue.path.map(String).join('.');
  const found = issue.path.length > 0 && input && typeof input === 'object' ? (input as Record<string, unknown>)[String(issue.path[0])] : undefined;
  throw new ConfigError(issue.message, { code: 'E_CONFIG_FIELD', file, field: field || 'type', expected: issue.code === 'unrecognized_keys' ? Object.keys(hashedTextConditionerSchema.shape).join(', ') : undefined, found });
}

/** Splits a prompt into tokens (step 1 above). */
export function promptTokens(prompt: string): string[] {
  return prompt
    .split(/[^A-Za-z0-9]+/)
    .filter((t) => t.length > 0)
    .map((t) => (/^[A-Z0-9]$/.test(t) ? t : t.toLowerCase()));
}

const BOS = '<bos>';
const EOS = '<eos>';

export class HashedTextConditioner implements TextConditioner {
  readonly config: HashedTextConditionerConfig;
  private readonly vectors = new Map<string, Float32Array>();
  private readonly positions: Float32Array; // [S, D]

  constructor(config: HashedTextConditionerConfigInput = {}) {
    this.config = parseConditioningConfig({ type: 'hashedWords', ...config });
    const { sequenceLength: S, dim: D } = this.config;
    this.positions = new Float32Array(S * D);
    for (let p = 0; p < S; p++) {
      for (let i = 0; i < D; i++) {
        const freq = Math.pow(10000, -(2 * Math.floor(i / 2)) / D);
        this.positions[p * D + i] = i % 2 === 0 ? Math.sin(p * freq) : Math.cos(p * freq);
      }
    }
  }

  get sequenceLength(): number {
    return this.config.sequenceLength;
  }

  get dim(): number {
    return this.config.dim;
  }

  /** e(w): the word's seeded vector (cached). */
  tokenVector(token: string): Float32Array {
    let v = this.vectors.get(token);
    if (!v) {
      v = Rng.forKey(this.config.seed, 'conditioning', 'token', token).normal(this.config.dim);
      this.vectors.set(token, v);
    }
    return v;
  }

  /** The sequence of one prompt (step 2): `<bos>`, tokens, `<eos>`; padding is implicit. */
  sequence(prompt: string): string[] {
    return [BOS, ...promptTokens(prompt).slice(0, this.config.sequenceLength - 2), EOS];
  }

  /** Host encoding `[B·S·D]` (row-major `[B, S, D]`). */
  encodeHost(prompts: readonly string[]): Float32Array {
    const { sequenceLength: S, dim: D, positionScale } = this.config;
    const out = new Float32Array(prompts.length * S * D);
    prompts.forEach((prompt, b) => {
      if (typeof prompt !== 'string') throw new InputError('prompts must be strings', { field: `prompts[${b}]`, found: typeof prompt });
      this.sequence(prompt).forEach((token, p) => {
        const e = this.tokenVector(token);
        const o = (b * S + p) * D;
        for (let i = 0; i < D; i++) out[o + i] = e[i]! + positionScale * this.positions[p * D + i]!;
      });
    });
    return out;
  }

  /** `[B, S, D]` tensor, synchronously (training loops). */
  encodeSync(prompts: readonly string[]): tf.Tensor3D {
    return tf.tensor3d(this.encodeHost(prompts), [prompts.length, this.config.sequenceLength, this.config.dim]);
  }

  async encode(prompts: readonly string[]): Promise<tf.Tensor3D> {
    return this.encodeSync(prompts);
  }

  async embed(prompts: readonly string[]): Promise<HostArray> {
    return { data: this.encodeHost(prompts), dims: [prompts.length, this.config.sequenceLength, this.config.dim] };
  }

  /** Writes `<modelDir>/conditioning/config.json`. */
  save(modelDir: string): string {
    const file = path.join(modelDir, CONDITIONING_FILES.dir, CONDITIONING_FILES.config);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    writeJsonAtomic(file, { _class_name: 'HashedTextConditioner', ...this.config });
    return file;
  }

  /** Reads `<modelDir>/conditioning/config.json` (or that file itself). */
  static load(location: string): HashedTextConditioner {
    const file = location.endsWith('.json') ? location : path.join(location, CONDITIONING_FILES.dir, CONDITIONING_FILES.config);
    if (!fs.existsSync(file)) throw new InputError('no conditioning config', { code: 'E_FILE_MISSING', file, expected: `${CONDITIONING_FILES.dir}/${CONDITIONING_FILES.config}`, found: 'missing' });
    let raw: unknown;
    try {
      raw = JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch (err) {
      throw new InputError('conditioning config is not valid JSON', { code: 'E_JSON', file, cause: err });
    }
    return new HashedTextConditioner(parseConditioningConfig(raw, file));
  }

  dispose(): void {
    this.vectors.clear();
  }
}
