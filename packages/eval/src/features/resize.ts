/**
 * The two image resamplers the reference evaluation uses, re-implemented exactly (APTP.md §8.2–8.4). Images are
 * interleaved RGB, HWC, row-major.
 *
 * - `torchBilinearResize`: PyTorch `F.interpolate(x, size, mode='bilinear', align_corners=False)` (no antialias) on a
 *   float image, then `clip(0, 255)`, no quantisation: clean-fid `make_resizer("PyTorch", False, "bilinear",
 *   (299, 299))`, i.e. the resize of `mode="legacy_pytorch"` FID. Source coordinate `(dst + 0.5)·in/out − 0.5`,
 *   clamped at 0; the two neighbours are blended linearly per axis.
 * - `pilResize`: Pillow's `Image.resize(size, resample)` for 8-bit RGB (`Resample.c`): separable convolution with the
 *   filter support scaled by the downscale factor (antialiasing), coefficients normalised and rounded to 22-bit fixed
 *   point, horizontal pass first with an 8-bit intermediate image, then the vertical pass, each rounded and clipped.
 *   `bicubic` (a = −0.5) is the CLIP preprocessing filter (torchvision `Resize(…, BICUBIC)` on PIL images) and the
 *   CMMD filter.
 *
 * sharp/libvips does NOT reproduce either: its upsampling is not the align_corners=False bilinear map, and its
 * `cubic` reduction uses a different mask and fixed-point precision and, for large factors, a box pre-shrink. The
 * `resize.test.ts` cross-check shows sharp within a few levels of `pilResize` but not equal.
 */
import { InputError } from '@aptp/core';

/** An 8-bit (or float) RGB image, HWC. */
export interface RgbImage {
  data: Uint8Array;
  height: number;
  width: number;
}

export interface FloatRgbImage {
  data: Float32Array;
  height: number;
  width: number;
}

function checkImage(img: { data: ArrayLike<number>; height: number; width: number }, what: string): void {
  if (!(img.height > 0 && img.width > 0) || img.data.length !== img.height * img.width * 3) {
    throw new InputError('image buffer does not match height×width×3', { field: what, expected: img.height * img.width * 3, found: img.data.length });
  }
}

/** Per-axis source indices and weights of PyTorch's align_corners=False linear interpolation. */
function torchLinearTaps(inSize: number, outSize: number): { i0: Int32Array; i1: Int32Array; w1: Float64Array } {
  const scale = inSize / outSize;
  const i0 = new Int32Array(outSize);
  const i1 = new Int32Array(outSize);
  const w1 = new Float64Array(outSize);
  for (let d = 0; d < outSize; d++) {
    let src = (d + 0.5) * scale - 0.5;
    if (src < 0) src = 0;
    const lo = Math.min(Math.floor(src), inSize - 1);
    i0[d] = lo;
    i1[d] = Math.min(lo + 1, inSize - 1);
    w1[d] = src - lo;
  }
  return { i0, i1, w1 };
}

/** PyTorch bilinear (align_corners=False, no antialias) resize to outH×outW, then clip to [0, 255]. Float output. */
export function torchBilinearResize(img: RgbImage | FloatRgbImage, outH: number, outW: number): FloatRgbImage {
  checkImage(img, 'image');
  const { height: h, width: w, data } = img;
  const ty = torchLinearTaps(h, outH);
  const tx = torchLinearTaps(w, outW);
  const out = new Float32Array(outH * outW * 3);
  for (let y = 0; y < outH; y++) {
    const r0 = ty.i0[y]! * w;
    const r1 = ty.i1[y]! * w;
    const wy1 = ty.w1[y]!;
    const wy0 = 1 - wy1;
    for (let x = 0; x < outW; x++) {
      const c0 = tx.i0[x]!;
      const c1 = tx.i1[x]!;
      const wx1 = tx.w1[x]!;
      const wx0 = 1 - wx1;
      const o = (y * outW + x) * 3;
      for (let c = 0; c < 3; c++) {
        const v =
          wy0 * (wx0 * data[(r0 + c0) * 3 + c]! + wx1 * data[(r0 + c1) * 3 + c]!) +
          wy1 * (wx0 * data[(r1 + c0) * 3 + c]! + wx1 * data[(r1 + c1) * 3 + c]!);
        out[o + c] = v < 0 ? 0 : v > 255 ? 255 : v;
      }
    }
  }
  return { data: out, height: outH, width: outW };
}

export type PilFilter = 'box' | 'bilinear' | 'hamming' | 'bicubic' | 'lanczos';

const sinc = (x: number): number => (x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x));

/** Pillow's filters and supports (`Resample.c`). */
const PIL_FILTERS: Record<PilFilter, { support: number; f: (x: number) => number }> = {
  box: { support: 0.5, f: (x) => (x > -0.5 && x <= 0.5 ? 1 : 0) },
  bilinear: { support: 1, f: (x) => (Math.abs(x) < 1 ? 1 - Math.abs(x) : 0) },
  hamming: {
    support: 1,
    f: (x) => {
      const a = Math.abs(x);
      if (a === 0) return 1;
      if (a >= 1) return 0;
      const t = a * Math.PI;
      return (Math.sin(t) / t) * (0.54 + 0.46 * Math.cos(t));
    },
  },
  bicubic: {
    support: 2,
    f: (x) => {
      const a = -0.5;
      const t = Math.abs(x);
      if (t < 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
      if (t < 2) return (((t - 5) * t + 8) * t - 4) * a;
      return 0;
    },
  },
  lanczos: { support: 3, f: (x) => (x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0) },
};

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 2 ** PRECISION_BITS;

/** `precompute_coeffs` + `normalize_coeffs_8bpc`: per output pixel, first source index, tap count, fixed-point taps. */
function pilCoeffs(inSize: number, outSize: number, filter: PilFilter): { bounds: Int32Array; ksize: number; kk: Int32Array } {
  const { support: baseSupport, f } = PIL_FILTERS[filter];
  const scale = inSize / outSize;
  const filterscale = Math.max(1, scale);
  const support = baseSupport * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const v = f((x + xmin - center + 0.5) * ss);
      w[x] = v;
      ww += v;
    }
    for (let x = 0; x < ksize; x++) {
      const v = x < xmax && ww !== 0 ? w[x]! / ww : x < xmax ? w[x]! : 0;
      // C: (int)(±0.5 + v·2^22), truncation toward zero.
      kk[xx * ksize + x] = v < 0 ? Math.trunc(-0.5 + v * ONE) : Math.trunc(0.5 + v * ONE);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { bounds, ksize, kk };
}

function clip8(v: number): number {
  if (v >= ONE * 256) return 255;
  if (v <= 0) return 0;
  return Math.floor(v / ONE);
}

/** Pillow `Image.resize((outW, outH), resample)` of an 8-bit RGB image (see the file comment). */
export function pilResize(img: RgbImage, outW: number, outH: number, filter: PilFilter = 'bicubic'): RgbImage {
  checkImage(img, 'image');
  if (!(Number.isInteger(outW) && Number.isInteger(outH) && outW > 0 && outH > 0)) {
    throw new InputError('resize target must be positive integers', { field: 'size', found: [outW, outH] });
  }
  const { width: inW, height: inH } = img;
  if (inW === outW && inH === outH) return { data: img.data.slice(), height: inH, width: inW };
  const horiz = pilCoeffs(inW, outW, filter);
  const vert = pilCoeffs(inH, outH, filter);
  let src = img.data;
  let srcW = inW;
  let srcH = inH;
  let vBounds = vert.bounds;
  if (outW !== inW) {
    // Horizontal pass over the rows the vertical pass will read.
    const first = vert.bounds[0]!;
    const last = vert.bounds[(outH - 1) * 2]! + vert.bounds[(outH - 1) * 2 + 1]!;
    const rows = outH !== inH ? last - first : inH;
    const rowOffset = outH !== inH ? first : 0;
    if (outH !== inH) {
      vBounds = Int32Array.from(vert.bounds);
      for (let i = 0; i < outH; i++) vBounds[i * 2] = vBounds[i * 2]! - first;
    }
    const tmp = new Uint8Array(rows * outW * 3);
    const { bounds, ksize, kk } = horiz;
    for (let yy = 0; yy < rows; yy++) {
      const rowBase = (yy + rowOffset) * inW * 3;
      for (let xx = 0; xx < outW; xx++) {
        const xmin = bounds[xx * 2]!;
        const xmax = bounds[xx * 2 + 1]!;
        const k = xx * ksize;
        let s0 = ONE / 2;
        let s1 = ONE / 2;
        let s2 = ONE / 2;
        for (let x = 0; x < xmax; x++) {
          const p = rowBase + (x + xmin) * 3;
          const c = kk[k + x]!;
          s0 += src[p]! * c;
          s1 += src[p + 1]! * c;
          s2 += src[p + 2]! * c;
        }
        const o = (yy * outW + xx) * 3;
        tmp[o] = clip8(s0);
        tmp[o + 1] = clip8(s1);
        tmp[o + 2] = clip8(s2);
      }
    }
    src = tmp;
    srcW = outW;
    srcH = rows;
  }
  if (outH === inH) return { data: src === img.data ? src.slice() : src, height: srcH, width: srcW };
  const out = new Uint8Array(outH * srcW * 3);
  const { ksize, kk } = vert;
  for (let yy = 0; yy < outH; yy++) {
    const ymin = vBounds[yy * 2]!;
    const ymax = vBounds[yy * 2 + 1]!;
    const k = yy * ksize;
    for (let xx = 0; xx < srcW; xx++) {
      let s0 = ONE / 2;
      let s1 = ONE / 2;
      let s2 = ONE / 2;
      for (let y = 0; y < ymax; y++) {
        const p = ((y + ymin) * srcW + xx) * 3;
        const c = kk[k + y]!;
        s0 += src[p]! * c;
        s1 += src[p + 1]! * c;
        s2 += src[p + 2]! * c;
      }
      const o = (yy * srcW + xx) * 3;
      out[o] = clip8(s0);
      out[o + 1] = clip8(s1);
      out[o + 2] = clip8(s2);
    }
  }
  return { data: out, height: outH, width: srcW };
}

/** Crops rows [top, top+h) and columns [left, left+w). */
export function cropImage(img: RgbImage, top: number, left: number, h: number, w: number): RgbImage {
  checkImage(img, 'image');
  if (top < 0 || left < 0 || top + h > img.height || left + w > img.width) {
    throw new InputError('crop box outside the image', { field: 'crop', expected: `inside ${img.height}x${img.width}`, found: [top, left, h, w] });
  }
  const out = new Uint8Array(h * w * 3);
  for (let y = 0; y < h; y++) out.set(img.data.subarray(((top + y) * img.width + left) * 3, ((top + y) * img.width + left + w) * 3), y * w * 3);
  return { data: out, height: h, width: w };
}

/** Python's round(): halves go to the even neighbour (torchvision CenterCrop uses it for the offsets). */
export function pythonRound(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}
