import * as fs from 'node:fs';
import { InputError } from '@aptp/core';

/**
 * What the serving layer needs from the generation code (issue 8 §3). The sampler's generate code implements it over
 * a loaded APTP model folder; tests use `FakeEngine`. The server calls the engine from one worker, one call at a
 * time (never concurrently), so an implementation need not be re-entrant.
 */
export interface ExpertInfo {
  /** Expert id as the router returns it (index into the architecture codebook, APTP.md §9). */
  id: number;
  /** MACs of one UNet call of this expert at the default size (a count), reported with every image. */
  macs: number;
  /** Optional display name, e.g. `expert-3`. */
  name?: string;
}

export interface EngineInfo {
  experts: readonly ExpertInfo[];
  /** Used when a request leaves the field out (APTP.md §9: PNDM 25 steps, CFG 7.5, 768 px for SD 2.1). */
  defaults: { steps: number; guidance: number; width: number; height: number };
  /** Request bounds: at most `maxSteps` steps; width and height in [sizeMultiple, maxSize], multiples of `sizeMultiple`. */
  limits: { maxSteps: number; maxSize: number; sizeMultiple: number };
}

/** One image to generate, fully resolved (defaults filled in). */
export interface ImageRequest {
  prompt: string;
  /** Per-prompt seed: the image must depend on it and on nothing else in the batch. */
  seed: number;
  steps: number;
  /** Classifier-free guidance scale. */
  guidance: number;
  width: number;
  height: number;
}

export interface GeneratedImage {
  /** The PNG file bytes. */
  png: Uint8Array;
  /** Engine facts about this image (scheduler, ...), passed through to JSON responses. */
  info?: Record<string, string | number | boolean>;
}

export interface ImageEngine {
  readonly info: EngineInfo;
  /** One expert id per prompt, in order (eval-mode routing, APTP.md §9). */
  route(prompts: readonly string[], signal?: AbortSignal): Promise<number[]>;
  /**
   * Generates one image per request; every request of the batch is routed to (or forced onto) `expertId`, which is
   * what lets APTP batch at inference. `result[i]` belongs to `requests[i]` and must be the same bytes whatever else
   * is in the batch (per-prompt seeds, `Rng.forKey(seed, ...)`).
   */
  generate(expertId: number, requests: readonly ImageRequest[], signal?: AbortSignal): Promise<GeneratedImage[]>;
  /** Releases models and tensors; idempotent. */
  dispose(): void | Promise<void>;
}

export interface ImageEngineOptions {
  /** The APTP model folder (router, experts, text encoder, scheduler, VAE decoder; issue 8 §1). */
  modelDir: string;
  /** Tensor backend name (`initBackend`), or undefined for the best available. */
  backend?: string;
  signal?: AbortSignal;
}

export type ImageEngineFactory = (options: ImageEngineOptions) => Promise<ImageEngine>;

/**
 * Builds the engine `serve` runs: checks the folder, then loads it with the sampler's model loader and generate code
 * (`AptpImageEngine`, generate.ts; issue 8 §1–2).
 */
export const loadImageEngine: ImageEngineFactory = async (options) => {
  const { modelDir } = options;
  let stat: fs.Stats;
  try {
    stat = fs.statSync(modelDir);
  } catch (err) {
    throw new InputError('model folder not found', { code: 'E_MODEL_DIR', file: modelDir, cause: err });
  }
  if (!stat.isDirectory()) throw new InputError('not a folder', { code: 'E_MODEL_DIR', file: modelDir });
  const { loadAptpImageEngine } = await import('../generate');
  return loadAptpImageEngine(options);
};
