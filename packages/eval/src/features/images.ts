/**
 * Reading evaluation images as 8-bit RGB (HWC): `.npy` arrays as the reference pipeline saves them (uint8
 * `[H, W, 3]`, APTP.md §8.1) and PNG/JPEG/WebP through sharp (alpha dropped without compositing, like PIL
 * `convert('RGB')`; greyscale expanded to three channels).
 */
import * as fs from 'node:fs';
import sharp from 'sharp';
import { InputError } from '@aptp/core';
import type { RgbImage } from './resize';

/** Parses a NumPy `.npy` (v1–v3) holding a C-ordered uint8 array `[H, W, 3]` (or `[H, W]` greyscale). */
export function parseNpyImage(bytes: Uint8Array, file = '<npy>'): RgbImage {
  const magic = String.fromCharCode(...bytes.subarray(1, 6));
  if (bytes[0] !== 0x93 || magic !== 'NUMPY') throw new InputError('not a .npy file', { file, field: 'magic' });
  const major = bytes[6]!;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = major === 1 ? dv.getUint16(8, true) : dv.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder().decode(bytes.subarray(start, start + headerLen));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr !== '|u1' && descr !== '<u1' && descr !== 'u1') throw new InputError('unsupported .npy dtype', { file, field: 'descr', expected: '|u1 (uint8)', found: descr });
  if (fortran !== 'False') throw new InputError('Fortran-ordered .npy arrays are not supported', { file, field: 'fortran_order', found: fortran });
  const shape = (shapeText ?? '').split(',').map((s) => s.trim()).filter((s) => s !== '').map(Number);
  if (!(shape.length === 3 && shape[2] === 3) && shape.length !== 2) {
    throw new InputError('expected an image array [H, W, 3] or [H, W]', { file, field: 'shape', found: shape });
  }
  const [h, w] = shape as [number, number];
  const data = bytes.subarray(start + headerLen);
  const n = h * w * (shape.length === 3 ? 3 : 1);
  if (data.length < n) throw new InputError('truncated .npy data', { file, expected: n, found: data.length });
  if (shape.length === 3) return { data: data.slice(0, n), height: h, width: w };
  const rgb = new Uint8Array(h * w * 3);
  for (let i = 0; i < h * w; i++) rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = data[i]!;
  return { data: rgb, height: h, width: w };
}

/** Encodes an RGB image as `.npy` (uint8 [H, W, 3]) — the reference's generated-image format. */
export function encodeNpyImage(img: RgbImage): Uint8Array {
  let header = `{'descr': '|u1', 'fortran_order': False, 'shape': (${img.height}, ${img.width}, 3), }`;
  const pad = 64 - ((10 + header.length + 1) % 64);
  header += ' '.repeat(pad % 64) + '\n';
  const out = new Uint8Array(10 + header.length + img.data.length);
  out.set([0x93, ...Array.from('NUMPY', (c) => c.charCodeAt(0)), 1, 0], 0);
  new DataView(out.buffer).setUint16(8, header.length, true);
  out.set(new TextEncoder().encode(header), 10);
  out.set(img.data, 10 + header.length);
  return out;
}

/** Loads one image file as 8-bit RGB. */
export async function loadRgbImage(file: string): Promise<RgbImage> {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (err) {
    throw new InputError('cannot read image', { file, cause: err, found: err instanceof Error ? err.message : String(err) });
  }
  if (file.toLowerCase().endsWith('.npy')) return parseNpyImage(bytes, file);
  try {
    const { data, info } = await sharp(bytes).removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
    if (info.channels === 3) return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice(), height: info.height, width: info.width };
    const rgb = new Uint8Array(info.width * info.height * 3);
    for (let i = 0; i < info.width * info.height; i++) rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = data[i * info.channels]!;
    return { data: rgb, height: info.height, width: info.width };
  } catch (err) {
    throw new InputError('cannot decode image', { file, cause: err, found: err instanceof Error ? err.message : String(err) });
  }
}
