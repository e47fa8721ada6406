import * as fs from 'node:fs';
import sharp, { type KernelEnum, type Sharp } from 'sharp';
import { InputError } from '@aptp/core';
import type { ImageInput, RgbImage, SkipReason } from '../source';

/**
 * Image decoding with sharp: JPEG / PNG / WebP (and whatever else libvips reads) → 8-bit sRGB, alpha dropped
 * (as PIL `convert('RGB')`, APTP.md §7.3). EXIF orientation is ignored, as in the reference (PIL does not rotate).
 * Failures throw `InputError` whose `code` is one of the `SkipReason`s, so the loader can skip and count them.
 */

/** The reference raises PIL's pixel limit to this value (APTP.md §7.1). */
export const MAX_IMAGE_PIXELS = 933_120_000;

export type Interpolation = 'bilinear' | 'bicubic' | 'nearest' | 'lanczos3';

const KERNEL: Record<Interpolation, keyof KernelEnum> = {
  bilinear: 'linear',
  bicubic: 'cubic',
  nearest: 'nearest',
  lanczos3: 'lanczos3',
};

export function inputName(input: ImageInput): string {
  return input.kind === 'file' ? input.path : input.name;
}

function fail(reason: SkipReason, file: string, message: string, cause?: unknown): never {
  throw new InputError(message, { code: reason, file, cause });
}

/** Reads the encoded bytes of a file or archive member; throws InputError(code missingImage | emptyFile). */
async function readBytes(input: Exclude<ImageInput, { kind: 'pixels' }>): Promise<Uint8Array> {
  let bytes: Uint8Array;
  if (input.kind === 'file') {
    try {
      bytes = await fs.promises.readFile(input.path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') fail('missingImage', input.path, 'image file is missing', err);
      fail('unreadableImage', input.path, `cannot read image file (${code ?? 'error'})`, err);
    }
  } else {
    bytes = input.bytes;
  }
  if (bytes.byteLength === 0) fail('emptyFile', inputName(input), 'image file is empty (0 bytes)');
  return bytes;
}

/**
 * True when the bytes start like a JPEG / PNG / WebP but lack its end (JPEG EOI marker, PNG IEND chunk, RIFF size).
 * Checked on the bytes because libvips' error text is per thread and can read "Unknown error" under concurrency.
 */
export function looksTruncated(b: Uint8Array): boolean {
  const n = b.byteLength;
  if (n >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) {
    let end = n;
    while (end > 2 && b[end - 1] === 0x00) end--; // some writers pad with zeros
    return !(b[end - 2] === 0xff && b[end - 1] === 0xd9);
  }
  if (n >= 8 && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47) {
    const tail = Buffer.from(b.subarray(Math.max(0, n - 12))).toString('latin1');
    return !tail.includes('IEND');
  }
  if (n >= 12 && b[0] === 0x52 && b[1] === 0x49 && b[2] === 0x46 && b[3] === 0x46 && b[8] === 0x57 && b[9] === 0x45) {
    const size = b[4]! | (b[5]! << 8) | (b[6]! << 16) | (b[7]! << 24);
    return size + 8 > n;
  }
  return false;
}

function classify(err: unknown, file: string, bytes?: Uint8Array): never {
  const message = err instanceof Error ? err.message.split('\n')[0]! : String(err);
  const truncated = (bytes !== undefined && looksTruncated(bytes)) || /premature end|truncat|unexpected end|end of (file|stream)/i.test(message);
  fail(truncated ? 'truncatedImage' : 'unreadableImage', file, `cannot decode image: ${message}`, err);
}

/** Width and height from the image header (cheap: no pixel decode). */
export async function imageSize(input: ImageInput): Promise<{ width: number; height: number }> {
  if (input.kind === 'pixels') return { width: input.image.width, height: input.image.height };
  const bytes = await readBytes(input);
  try {
    const m = await sharp(bytes, { failOn: 'truncated', limitInputPixels: MAX_IMAGE_PIXELS }).metadata();
    if (!m.width || !m.height) fail('unreadableImage', inputName(input), 'image header has no size');
    return { width: m.width, height: m.height };
  } catch (err) {
    if (err instanceof InputError) throw err;
    return classify(err, inputName(input), bytes);
  }
}

export interface DecodeOptions {
  /** Resize to exactly this size (after decoding). */
  resize?: { width: number; height: number; interpolation?: Interpolation };
}

/**
 * Decodes an image to 8-bit RGB, optionally resized in the same sharp pipeline. The whole image is decoded, so a
 * file truncated after a valid header fails here, not later.
 */
export async function decodeImage(input: ImageInput, options: DecodeOptions = {}): Promise<RgbImage> {
  const name = inputName(input);
  let pipeline: Sharp;
  let bytes: Uint8Array | undefined;
  if (input.kind === 'pixels') {
    const { width, height, data } = input.image;
    if (!options.resize || (options.resize.width === width && options.resize.height === height)) return input.image;
    pipeline = sharp(data, { raw: { width, height, channels: 3 } });
  } else {
    bytes = await readBytes(input);
    pipeline = sharp(bytes, { failOn: 'truncated', limitInputPixels: MAX_IMAGE_PIXELS });
  }
  try {
    pipeline = pipeline.removeAlpha().toColourspace('srgb');
    if (options.resize) {
      const { width, height, interpolation = 'bilinear' } = options.resize;
      pipeline = pipeline.resize(width, height, { fit: 'fill', kernel: KERNEL[interpolation] });
    }
    const { data, info } = await pipeline.raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) fail('unreadableImage', name, `expected 3 channels after RGB conversion, found ${info.channels}`);
    return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
  } catch (err) {
    if (err instanceof InputError) throw err;
    return classify(err, name, bytes);
  }
}

/** Encodes RGB pixels as PNG bytes. */
export async function encodePng(image: RgbImage): Promise<Buffer> {
  return sharp(image.data, { raw: { width: image.width, height: image.height, channels: 3 } }).png().toBuffer();
}
