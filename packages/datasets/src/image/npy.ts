import { writeFileAtomic } from '@aptp/core';
import type { RgbImage } from '../source';

/**
 * Reference-image helpers of APTP.md §7.2/§8.2: the reference saves each COCO-30k image as `cv2.resize(img,
 * (256, 256))` (bilinear, no antialiasing) in a uint8 HWC `.npy` file. `resizeBilinearCv2` follows OpenCV's
 * INTER_LINEAR sampling (half-pixel centers, clamped edges) in floating point; OpenCV's 11-bit fixed-point weights can
 * differ by ±1 level.
 */
export function resizeBilinearCv2(src: RgbImage, width: number, height: number): RgbImage {
  const out = new Uint8Array(width * height * 3);
  const sx = src.width / width;
  const sy = src.height / height;
  const xs = new Int32Array(width);
  const ax = new Float64Array(width);
  for (let x = 0; x < width; x++) {
    let f = (x + 0.5) * sx - 0.5;
    let i = Math.floor(f);
    f -= i;
    if (i < 0) {
      i = 0;
      f = 0;
    }
    if (i >= src.width - 1) {
      i = src.width - 1;
      f = 0;
    }
    xs[x] = i;
    ax[x] = f;
  }
  for (let y = 0; y < height; y++) {
    let fy = (y + 0.5) * sy - 0.5;
    let y0 = Math.floor(fy);
    fy -= y0;
    if (y0 < 0) {
      y0 = 0;
      fy = 0;
    }
    if (y0 >= src.height - 1) {
      y0 = src.height - 1;
      fy = 0;
    }
    const y1 = Math.min(y0 + 1, src.height - 1);
    for (let x = 0; x < width; x++) {
      const x0 = xs[x]!;
      const x1 = Math.min(x0 + 1, src.width - 1);
      const a = ax[x]!;
      for (let c = 0; c < 3; c++) {
        const p00 = src.data[(y0 * src.width + x0) * 3 + c]!;
        const p01 = src.data[(y0 * src.width + x1) * 3 + c]!;
        const p10 = src.data[(y1 * src.width + x0) * 3 + c]!;
        const p11 = src.data[(y1 * src.width + x1) * 3 + c]!;
        const top = p00 + a * (p01 - p00);
        const bottom = p10 + a * (p11 - p10);
        out[(y * width + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(top + fy * (bottom - top))));
      }
    }
  }
  return { width, height, data: out };
}

/** A NumPy v1.0 `.npy` file of a uint8 `[H, W, 3]` array (C order), as `numpy.save` writes it. */
export function encodeNpyRgb(image: RgbImage): Uint8Array {
  let header = `{'descr': '|u1', 'fortran_order': False, 'shape': (${image.height}, ${image.width}, 3), }`;
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const out = new Uint8Array(10 + header.length + image.data.length);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0], 0); // \x93NUMPY v1.0
  out[8] = header.length & 0xff;
  out[9] = header.length >> 8;
  for (let i = 0; i < header.length; i++) out[10 + i] = header.charCodeAt(i);
  out.set(image.data, 10 + header.length);
  return out;
}

export function writeNpyRgb(file: string, image: RgbImage): void {
  writeFileAtomic(file, encodeNpyRgb(image));
}
