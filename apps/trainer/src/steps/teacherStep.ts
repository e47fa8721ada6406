import * as tf from '@tensorflow/tfjs-core';
import { Rng, ShapeError, type DDPMScheduler } from '@aptp/core';
import type { RgbImage, SyntheticWorld } from '@aptp/datasets';
import { diffusionLoss, minSnrWeights, type PredictionType, type X0Weighting } from '@aptp/losses';
import type { HashedTextConditioner, UNet2DConditionModel } from '@aptp/unet-gating';
import type { AdamW } from '../optim/adamW';
import { namedGrads } from '../optim/adamW';

/**
 * One teacher training step (issue 7 item 1; the denoising loss of APTP.md §5.1 on a text-conditioned UNet):
 *
 *   1. batch: synthetic world: rows k·B … k·B+B−1 of the train split (k = completed steps; every row is new),
 *      images → [−1, 1]; a data set: the next batch of the data loader (already transformed to [−1, 1]), whose row
 *      key is `<epoch>:<sample id>` (`dataRowKey`: a sample seen again in a later epoch gets new noise);
 *      with probability `captionDropout` a caption is replaced by "" (classifier-free guidance training);
 *   2. per row r: t_r ~ U{0, …, T−1} and ε_r ~ N(0, I) from `Rng.forKey(seed, 'teacher', r)` (keyed per sample:
 *      independent of batch size and backend, and a resumed run sees the same numbers without any RNG state);
 *   3. x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε;  target = v = √ᾱ_t·ε − √(1−ᾱ_t)·x_0 (or ε);
 *   4. L = mean_r w_r · mean (UNet(x_t, t, c) − target)² with min-SNR-γ weights w_r;
 *   5. AdamW step; then the EMA of the weights: θ̄ ← d·θ̄ + (1−d)·θ, d = min(emaDecay, (1+k)/(10+k)).
 */
export interface TeacherBatch {
  /** Clean images `[B, 3, H, W]` in [−1, 1]. */
  x0: tf.Tensor4D;
  /** Noise `[B, 3, H, W]`. */
  noise: tf.Tensor4D;
  /** Timesteps `[B]`. */
  timesteps: Int32Array;
  /** Prompts as fed to the conditioner (after dropout). */
  prompts: string[];
  /** Data rows used: synthetic row indices, or `dataRowKey(epoch, id)` of a data set's samples. */
  rows: Array<number | string>;
}

export interface TeacherBatchOptions {
  seed: number;
  batchSize: number;
  captionDropout: number;
  numTrainTimesteps: number;
}

/** Clean images `[B, 3, H, W]` in [−1, 1] (row-major) with their captions and per-sample row keys. */
export interface TeacherImages {
  pixels: Float32Array;
  shape: [number, number, number, number];
  captions: string[];
  rows: Array<number | string>;
}

/** The RNG row key of a data-set sample in an epoch (unique per presentation, independent of batching). */
export function dataRowKey(epoch: number, id: string): string {
  return `${epoch}:${id}`;
}

/** Step 1–2 on given images: per row, timestep, caption dropout and noise from `Rng.forKey(seed, 'teacher', row)`. */
export function teacherBatchOf(images: TeacherImages, options: Pick<TeacherBatchOptions, 'seed' | 'captionDropout' | 'numTrainTimesteps'>): TeacherBatch {
  const [B, C, H, W] = images.shape;
  const size = C * H * W;
  if (C !== 3 || images.pixels.length !== B * size || images.rows.length !== B || images.captions.length !== B) {
    throw new ShapeError('teacher images must be [B, 3, H, W] with one caption and row key per image', {
      field: 'images',
      expected: `3 channels, ${B * size} pixels, ${B} captions and rows`,
      found: `${C} channels, ${images.pixels.length} pixels, ${images.captions.length} captions, ${images.rows.length} rows`,
    });
  }
  const noise = new Float32Array(B * size);
  const timesteps = new Int32Array(B);
  const prompts: string[] = [];
  images.rows.forEach((row, b) => {
    const rng = Rng.forKey(options.seed, 'teacher', row);
    timesteps[b] = rng.nextInt(options.numTrainTimesteps);
    prompts.push(rng.nextDouble() < options.captionDropout ? '' : images.captions[b]!);
    noise.set(rng.normal(size), b * size);
  });
  return { x0: tf.tensor4d(images.pixels, images.shape), noise: tf.tensor4d(noise, images.shape), timesteps, prompts, rows: [...images.rows] };
}

/** Same-size RGB images (`[H, W, 3]` uint8) → one `[B, 3, H, W]` float32 array in [−1, 1] (x / 127.5 − 1). */
export function rgbImagesToNchw(images: readonly RgbImage[]): { pixels: Float32Array; shape: [number, number, number, number] } {
  const H = images[0]!.height;
  const W = images[0]!.width;
  const hw = H * W;
  const pixels = new Float32Array(images.length * 3 * hw);
  images.forEach((img, b) => {
    for (let p = 0; p < hw; p++) for (let c = 0; c < 3; c++) pixels[(b * 3 + c) * hw + p] = img.data[p * 3 + c]! / 127.5 - 1;
  });
  return { pixels, shape: [images.length, 3, H, W] };
}

/** The batch of step k of the synthetic world (steps 1–2): train rows firstRow + k·B …. Pure function of its arguments. */
export function teacherBatch(world: SyntheticWorld, options: TeacherBatchOptions, k: number, firstRow = 0): TeacherBatch {
  const B = options.batchSize;
  const rows = Array.from({ length: B }, (_, b) => firstRow + k * B + b);
  const samples = rows.map((row) => world.sample('train', row));
  return teacherBatchOf({ ...rgbImagesToNchw(samples.map((s) => s.image)), captions: samples.map((s) => s.caption), rows }, options);
}

export interface TeacherStepContext {
  unet: UNet2DConditionModel<tf.Tensor>;
  params: Record<string, tf.Variable>;
  ema: Record<string, tf.Variable> | null;
  emaDecay: number;
  optimizer: AdamW;
  scheduler: DDPMScheduler;
  conditioner: HashedTextConditioner;
  snrGamma: number | null;
  /** x₀ models: weight the x₀ error like the ε (min(SNR, γ)) or the v (min(SNR + 1, γ)) min-SNR loss. */
  x0WeightedAs: X0Weighting;
}

/** The loss of a batch (steps 3–4), differentiable in the UNet's variables. */
export function teacherLoss(ctx: Pick<TeacherStepContext, 'unet' | 'scheduler' | 'snrGamma' | 'x0WeightedAs'>, batch: TeacherBatch, context: tf.Tensor3D): tf.Scalar {
  const { unet, scheduler } = ctx;
  return tf.tidy(() => {
    const t = tf.tensor1d(batch.timesteps, 'int32');
    const noisy = scheduler.addNoise(batch.x0, batch.noise, batch.timesteps);
    const target = scheduler.getTarget(batch.x0, batch.noise, batch.timesteps);
    const pred = unet.forward({ sample: noisy, timestep: t, encoderHiddenStates: context, blockOutputs: false }).sample;
    const type = scheduler.config.predictionType as PredictionType;
    const weights = ctx.snrGamma === null ? undefined : minSnrWeights(scheduler.snrValues(batch.timesteps), ctx.snrGamma, type, ctx.x0WeightedAs);
    return diffusionLoss(pred, target, weights);
  });
}

/** Updates the EMA variables (step 5) after `k` completed optimizer steps. */
export function updateEma(ema: Record<string, tf.Variable>, params: Record<string, tf.Variable>, maxDecay: number, k: number): number {
  const d = Math.min(maxDecay, (1 + k) / (10 + k));
  tf.tidy(() => {
    for (const [name, e] of Object.entries(ema)) e.assign(tf.add(tf.mul(e, d), tf.mul(params[name]!, 1 - d)));
  });
  return d;
}

/**
 * Step 5 given the batch's loss and gradient (one thread's or the data-parallel mean): AdamW and the EMA when the loss is
 * finite (a non-finite loss is left to the training loop's guard). Disposes `grads`.
 */
export function applyTeacherUpdate(ctx: TeacherStepContext, batch: TeacherBatch, loss: number, grads: Record<string, tf.Tensor>, k: number): { loss: number; meanTimestep: number } {
  try {
    if (Number.isFinite(loss)) ctx.optimizer.step(grads);
  } finally {
    tf.dispose(Object.values(grads));
  }
  if (Number.isFinite(loss) && ctx.ema) updateEma(ctx.ema, ctx.params, ctx.emaDecay, k);
  return { loss, meanTimestep: batch.timesteps.reduce((a, b) => a + b, 0) / batch.timesteps.length };
}

/** Steps 3–5 on a built batch after `k` completed steps (the caller owns and disposes the batch). */
export function teacherStepOn(ctx: TeacherStepContext, batch: TeacherBatch, k: number): { loss: number; meanTimestep: number } {
  const context = ctx.conditioner.encodeSync(batch.prompts);
  try {
    const { value, grads } = namedGrads(() => teacherLoss(ctx, batch, context), ctx.params);
    let loss: number;
    try {
      loss = value.dataSync()[0]!;
    } finally {
      value.dispose();
    }
    return applyTeacherUpdate(ctx, batch, loss, grads, k);
  } finally {
    context.dispose();
  }
}

/** Steps 1–5 for step k of the synthetic world; returns the loss (read at the step boundary). */
export function teacherStep(ctx: TeacherStepContext, world: SyntheticWorld, options: TeacherBatchOptions, k: number): { loss: number; meanTimestep: number; numTensors: number } {
  const batch = teacherBatch(world, options, k);
  let m: { loss: number; meanTimestep: number };
  try {
    m = teacherStepOn(ctx, batch, k);
  } finally {
    tf.dispose([batch.x0, batch.noise]);
  }
  return { ...m, numTensors: tf.memory().numTensors };
}
