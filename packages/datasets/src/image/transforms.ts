import { z } from 'zod';
import { ConfigError, Rng } from '@aptp/core';
import type { ImageInput, RgbImage } from '../source';
import { decodeImage, imageSize } from './decode';

/**
 * The image pipeline of APTP.md §7.3: RGB → resize (shorter side = resolution, bilinear) → crop (random or center)
 * → optional random horizontal flip → [−1, 1] float pixels, channels first (`[3, H, W]`, as ToTensor + Normalize(0.5,
 * 0.5)). Randomness comes from an `Rng` the caller keys per sample, so a sample's crop and flip do not depend on the
 * batch it lands in or the number of workers.
 */
export const imageTransformSchema = z
  .strictObject({
    resolution: z.number().int().positive().default(256).describe('output side in pixels (reference `data.resolution` = 256, §1.3)'),
    resize: z
      .enum(['shorterSide', 'exact', 'none'])
      .default('shorterSide')
      .describe('shorterSide: torchvision Resize(resolution); exact: resize to resolution² ignoring aspect (COCO-30k reference images, §7.2); none'),
    crop: z.enum(['random', 'center', 'none']).default('random').describe('reference uses RandomCrop for train and validation (`center_crop: false`, §7.3)'),
    flip: z.boolean().default(true).describe('RandomHorizontalFlip(p = 0.5) (reference `random_flip: true` for train, §7.3)'),
    interpolation: z.enum(['bilinear', 'bicubic', 'nearest', 'lanczos3']).default('bilinear').describe('resize filter (reference: bilinear)'),
  })
  .describe('image transform (APTP.md §7.3)');

export type ImageTransform = z.infer<typeof imageTransformSchema>;

/** Named transforms: the reference's train / validation transforms and the ones the evaluation uses. */
export const TRANSFORM_PRESETS = {
  /** Reference training transform: Resize(256) → RandomCrop(256) → RandomHorizontalFlip → [−1, 1]. */
  train: { resize: 'shorterSide', crop: 'random', flip: true, interpolation: 'bilinear' },
  /** Reference validation transform (as implemented: RandomCrop because `center_crop: false`, no flip). */
  eval: { resize: 'shorterSide', crop: 'random', flip: false, interpolation: 'bilinear' },
  /** Deterministic validation: Resize → CenterCrop, no flip. */
  evalCenter: { resize: 'shorterSide', crop: 'center', flip: false, interpolation: 'bilinear' },
  /** COCO-30k reference images: resize to resolution² (bilinear), no crop (APTP.md §7.2). */
  coco30kReference: { resize: 'exact', crop: 'none', flip: false, interpolation: 'bilinear' },
  /** Synthetic world: already rendered at the right size; only normalise (flips would break "left of"). */
  synthetic: { resize: 'none', crop: 'none', flip: false, interpolation: 'bilinear' },
} as const satisfies Record<string, Omit<ImageTransform, 'resolution'>>;

export type TransformPresetName = keyof typeof TRANSFORM_PRESETS;

export function transformPreset(name: TransformPresetName, resolution = 256): ImageTransform {
  const preset = TRANSFORM_PRESETS[name];
  if (!preset) throw new ConfigError('unknown transform preset', { field: 'transform', expected: Object.keys(TRANSFORM_PRESETS), found: name });
  return { resolution, ...preset };
}

/** Python's round(): halves go to the even neighbour (torchvision center_crop uses it). */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** torchvision `Resize(size)` with an int: shorter side → size, longer side → int(size · long / short). */
export function resizedSize(width: number, height: number, t: ImageTransform): { width: number; height: number } {
  if (t.resize === 'none') return { width, height };
  if (t.resize === 'exact') return { width: t.resolution, height: t.resolution };
  const short = Math.min(width, height);
  const long = Math.max(width, height);
  const newLong = Math.floor((t.resolution * long) / short);
  return width <= height ? { width: t.resolution, height: newLong } : { width: newLong, height: t.resolution };
}

export interface CropAndFlip {
  top: number;
  left: number;
  height: number;
  width: number;
  flip: boolean;
}

/**
 * Crop window and flip for an image of the given (resized) size. Draw order from `rng`: crop top, crop left, then
 * flip (as torchvision RandomCrop.get_params then RandomHorizontalFlip). Center crop and no-flip draw nothing.
 */
export function cropAndFlip(width: number, height: number, t: ImageTransform, rng: Rng): CropAndFlip {
  let top = 0;
  let left = 0;
  let ch = height;
  let cw = width;
  if (t.crop !== 'none') {
    ch = Math.min(t.resolution, height);
    cw = Math.min(t.resolution, width);
    if (t.crop === 'random') {
      top = rng.nextInt(height - ch + 1);
      left = rng.nextInt(width - cw + 1);
    } else {
      top = roundHalfEven((height - ch) / 2);
      left = roundHalfEven((width - cw) / 2);
    }
  }
  const flip = t.flip ? rng.nextDouble() < 0.5 : false;
  return { top, left, height: ch, width: cw, flip };
}

/** Crops, flips and normalises HWC uint8 → CHW float32 in [−1, 1] (x / 127.5 − 1). */
export function toNormalizedChw(image: RgbImage, c: CropAndFlip): Float32Array {
  const { width: cw, height: ch } = c;
  const plane = cw * ch;
  const out = new Float32Array(3 * plane);
  const src = image.data;
  for (let y = 0; y < ch; y++) {
    const row = (c.top + y) * image.width;
    for (let x = 0; x < cw; x++) {
      const sx = c.flip ? c.left + cw - 1 - x : c.left + x;
      const s = (row + sx) * 3;
      const d = y * cw + x;
      out[d] = src[s]! / 127.5 - 1;
      out[plane + d] = src[s + 1]! / 127.5 - 1;
      out[2 * plane + d] = src[s + 2]! / 127.5 - 1;
    }
  }
  return out;
}

/** One transformed image: `[3, height, width]` values in [−1, 1]. */
export interface PreparedImage {
  pixels: Float32Array;
  width: number;
  height: number;
  crop: CropAndFlip;
}

/**
 * Decode → resize → crop/flip → normalise. Throws `InputError` (code = skip reason) for unreadable images.
 * `rng` should be keyed per sample, e.g. `Rng.forKey(seed, 'transform', epoch, sampleId)`.
 */
export async function prepareImage(input: ImageInput, t: ImageTransform, rng: Rng): Promise<PreparedImage> {
  let image: RgbImage;
  if (t.resize === 'none') {
    image = await decodeImage(input);
  } else {
    const size = await imageSize(input);
    const target = resizedSize(size.width, size.height, t);
    image = await decodeImage(input, { resize: { ...target, interpolation: t.interpolation } });
  }
  const crop = cropAndFlip(image.width, image.height, t, rng);
  return { pixels: toNormalizedChw(image, crop), width: crop.width, height: crop.height, crop };
}
