import * as tf from '@tensorflow/tfjs-core';
import type { ProgressCallback } from '@aptp/core';

/**
 * A frozen prompt encoder (APTP.md §2.1): prompts → `[B, d]` embeddings, the predictor's input. Implementations:
 * `SyntheticPromptEncoder` (offline, no weights), `SentenceTransformerEncoder` (all-mpnet-base-v2 layout, ONNX),
 * and `CachedPromptEncoder` (on-disk cache around either).
 */
export interface EncodeOptions {
  signal?: AbortSignal;
  onProgress?: ProgressCallback;
}

export interface PromptEncoder {
  /**
   * Stable identity of the encoder and its settings (cache key): two encoders with the same id must give the same
   * embedding for the same prompt.
   */
  readonly id: string;
  /** Embedding width d. */
  readonly dim: number;
  /** Row-major `[B, d]` embeddings on the host. */
  embed(prompts: readonly string[], options?: EncodeOptions): Promise<Float32Array>;
  /** `[B, d]` embeddings as a tensor (caller owns it). */
  encode(prompts: readonly string[], options?: EncodeOptions): Promise<tf.Tensor2D>;
  /** Releases models / flushes caches. Idempotent. */
  dispose(): Promise<void>;
}

/** `encode` in terms of `embed`, for implementations. */
export async function encodeAsTensor(encoder: Pick<PromptEncoder, 'embed' | 'dim'>, prompts: readonly string[], options?: EncodeOptions): Promise<tf.Tensor2D> {
  const rows = await encoder.embed(prompts, options);
  return tf.tensor2d(rows, [prompts.length, encoder.dim]);
}
