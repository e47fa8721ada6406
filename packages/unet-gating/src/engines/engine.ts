import { InputError, ShapeError } from '@aptp/core';

/**
 * What a sampling loop needs from a UNet, whatever runs it (STYLE.md §2 `unet-gating/engines`): one call per
 * denoising step, host arrays in and out (NCHW, diffusers layout), classifier-free guidance as **one** batched call.
 * `OrtUNetEngine` (ONNX Runtime, the fast path) and `TfjsUNetEngine` (the eager tfjs model) implement it.
 */

/** A float32 host tensor, row-major. */
export interface HostArray {
  data: Float32Array;
  dims: readonly number[];
}

export interface UNetStepInput {
  /** Noisy latents `[B, C_in, H, W]`. */
  sample: HostArray;
  /** One timestep for the batch, or one per item. */
  timestep: number | ArrayLike<number>;
  /** Text states `[B, S, D]`. */
  encoderHiddenStates: HostArray;
}

export interface GuidedStepInput {
  /** Latents `[B, C_in, H, W]` (each is run twice: unconditional and conditional). */
  sample: HostArray;
  /** The step's timestep (all items). */
  timestep: number;
  /**
   * `[2B, S, D]`: the B unconditional rows first, then the B conditional rows (diffusers'
   * `torch.cat([negative_prompt_embeds, prompt_embeds])`). Build it once per generation, not per step.
   */
  encoderHiddenStates: HostArray;
  /** w in `ε_u + w·(ε_c − ε_u)` (diffusers `guidance_scale`; 7.5 for SD 2.1). */
  guidanceScale: number;
}

export interface UNetEngine {
  /** `ort` or `tfjs`. */
  readonly kind: string;
  /** One UNet call: `[B, C_out, H, W]`. */
  predict(input: UNetStepInput): Promise<HostArray>;
  /** Classifier-free guidance in one call of batch 2B: `ε_u + w·(ε_c − ε_u)`, `[B, C_out, H, W]`. */
  predictGuided(input: GuidedStepInput): Promise<HostArray>;
  /** Releases the model. Idempotent. */
  dispose(): Promise<void>;
}

/** Checks a step's shapes; returns B, S and the timestep per item. */
export function checkStep(input: UNetStepInput, inChannels: number, contextDim: number): { batch: number; timesteps: Float32Array } {
  const [b, c] = input.sample.dims;
  if (input.sample.dims.length !== 4 || c !== inChannels) {
    throw new ShapeError('sample must be [B, C_in, H, W]', { code: 'E_SHAPE', field: 'sample', expected: `[B, ${inChannels}, H, W]`, found: input.sample.dims });
  }
  checkSize(input.sample, 'sample');
  const e = input.encoderHiddenStates;
  if (e.dims.length !== 3 || e.dims[0] !== b || e.dims[2] !== contextDim) {
    throw new ShapeError('encoderHiddenStates must be [B, S, D]', { code: 'E_SHAPE', field: 'encoderHiddenStates', expected: `[${b}, S, ${contextDim}]`, found: e.dims });
  }
  checkSize(e, 'encoderHiddenStates');
  const timesteps = new Float32Array(b!);
  if (typeof input.timestep === 'number') timesteps.fill(input.timestep);
  else if (input.timestep.length === b) timesteps.set(Array.from(input.timestep));
  else if (input.timestep.length === 1) timesteps.fill(input.timestep[0]!);
  else throw new ShapeError('timestep must be a number or one value per batch item', { code: 'E_SHAPE', field: 'timestep', expected: `[${b}]`, found: `[${input.timestep.length}]` });
  return { batch: b!, timesteps };
}

/** Checks a guided step; returns B. */
export function checkGuided(input: GuidedStepInput): number {
  const b = input.sample.dims[0]!;
  const e = input.encoderHiddenStates.dims;
  if (e[0] !== 2 * b) {
    throw new ShapeError('guided step: encoderHiddenStates must hold 2B rows (unconditional, then conditional)', { code: 'E_SHAPE', field: 'encoderHiddenStates', expected: `[${2 * b}, S, D]`, found: e });
  }
  if (!Number.isFinite(input.guidanceScale)) {
    throw new InputError('guidanceScale must be finite', { code: 'E_INPUT', field: 'guidanceScale', found: input.guidanceScale });
  }
  return b;
}

function checkSize(t: HostArray, field: string): void {
  const n = t.dims.reduce((a, d) => a * d, 1);
  if (n !== t.data.length) throw new ShapeError('data length does not match dims', { code: 'E_SHAPE', field, expected: `${n} for [${t.dims.join(',')}]`, found: t.data.length });
}

/** `out = u + w·(c − u)` for the two halves of `both` (`[2B, ...]`: u first). */
export function combineGuidance(both: Float32Array, scale: number, out = new Float32Array(both.length / 2)): Float32Array {
  const n = both.length / 2;
  for (let i = 0; i < n; i++) {
    const u = both[i]!;
    out[i] = u + scale * (both[n + i]! - u);
  }
  return out;
}
