import sharp from 'sharp';
import { Rng } from '@aptp/core';
import { expectClose } from '@aptp/core/testing';
import { cropImage, pilResize, pythonRound, torchBilinearResize } from './resize';
import type { PilFilter, RgbImage } from './resize';

/** A grey image (R = G = B) from one channel's values. */
function grey(values: number[], height: number, width: number): RgbImage {
  const data = new Uint8Array(height * width * 3);
  values.forEach((v, i) => data.fill(v, 3 * i, 3 * i + 3));
  return { data, height, width };
}

const channel0 = (d: ArrayLike<number>): number[] => Array.from({ length: d.length / 3 }, (_, i) => d[3 * i]!);

function smoothImage(h: number, w: number, seed: number): RgbImage {
  const rng = Rng.forKey(seed, 'smooth');
  const [a, b, c] = rng.uniform(3, 0.02, 0.2);
  const data = new Uint8Array(h * w * 3);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++)
      for (let ch = 0; ch < 3; ch++) data[(y * w + x) * 3 + ch] = Math.round(127.5 + 120 * Math.sin(a! * x + b! * y * (ch + 1) + c! * ch));
  return { data, height: h, width: w };
}

describe('torchBilinearResize (F.interpolate bilinear, align_corners=False)', () => {
  test('PyTorch documentation example: [[1,2],[3,4]] upsampled ×2', () => {
    // torch.nn.Upsample(scale_factor=2, mode='bilinear') docs output (align_corners=False)
    const expected = [1, 1.25, 1.75, 2, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3, 3.25, 3.75, 4];
    const out = torchBilinearResize(grey([1, 2, 3, 4], 2, 2), 4, 4);
    for (let c = 0; c < 3; c++) expectClose(Array.from({ length: 16 }, (_, i) => out.data[3 * i + c]!), expected, { name: `channel ${c}`, atol: 1e-6 });
  });

  test('linear ramps are reproduced (interior) and clamped at the borders: 256 → 299', () => {
    const w = 256;
    const img = grey(Array.from({ length: w }, (_, x) => x), 1, w);
    const out = torchBilinearResize(img, 1, 299);
    const expected = Array.from({ length: 299 }, (_, d) => Math.min(w - 1, Math.max(0, ((d + 0.5) * w) / 299 - 0.5)));
    expectClose(channel0(out.data), expected, { name: 'ramp', atol: 1e-4 });
  });

  test('downscale by 2 averages neighbour pairs (no antialias); same size is the identity', () => {
    const out = torchBilinearResize(grey([0, 10, 20, 30, 40, 50, 60, 70], 1, 8), 1, 4);
    expect(channel0(out.data)).toEqual([5, 25, 45, 65]);
    const img = smoothImage(5, 7, 1);
    expect(Array.from(torchBilinearResize(img, 5, 7).data)).toEqual(Array.from(img.data));
  });
});

describe('pilResize (Pillow Resample.c, 8-bit)', () => {
  test('known case: bicubic 4 → 2 of [0, 100, 200, 255] is [60, 221] (antialiased taps ±1.25/2 of 4 px)', () => {
    // Taps (x − center + 0.5)/2 → weights [0.4587, 0.4587, 0.1198, −0.0372] (normalised), 22-bit fixed point.
    expect(channel0(pilResize(grey([0, 100, 200, 255], 1, 4), 2, 1, 'bicubic').data)).toEqual([60, 221]);
    // Vertical pass alone gives the same numbers.
    expect(channel0(pilResize(grey([0, 100, 200, 255], 4, 1), 1, 2, 'bicubic').data)).toEqual([60, 221]);
    // Bilinear 4 → 2: triangle of half-width 2 (support 1 × downscale 2).
    const bl = channel0(pilResize(grey([0, 100, 200, 255], 1, 4), 2, 1, 'bilinear').data);
    // x=0..2 for center 1: taps 0.75, 0.75, 0.25 (sum 1.75) → (0·.75 + 100·.75 + 200·.25)/1.75 = 71.43 → 71
    // x=1..3 for center 3: taps 0.25, 0.75, 0.75 → (25 + 150 + 191.25)/1.75 = 209.29 → 209
    expect(bl).toEqual([71, 209]);
  });

  test('constants stay constant for every filter, up and down', () => {
    for (const f of ['box', 'bilinear', 'hamming', 'bicubic', 'lanczos'] as PilFilter[]) {
      for (const [h, w, oh, ow] of [
        [7, 9, 3, 4],
        [5, 5, 12, 17],
        [30, 20, 8, 11],
      ] as const) {
        const img = grey(new Array(h * w).fill(173), h, w);
        const out = pilResize(img, ow, oh, f);
        expect(out.height).toBe(oh);
        expect(out.width).toBe(ow);
        expect(new Set(out.data)).toEqual(new Set([173]));
      }
    }
  });

  test('cross-check: sharp/libvips cubic is close to but not the Pillow bicubic (which is why we do not use it)', async () => {
    const img = smoothImage(64, 48, 2);
    const ours = pilResize(img, 20, 27, 'bicubic');
    const viaSharp = await sharp(Buffer.from(img.data), { raw: { width: 48, height: 64, channels: 3 } })
      .resize(20, 27, { kernel: 'cubic', fit: 'fill' })
      .raw()
      .toBuffer();
    let maxDiff = 0;
    let sum = 0;
    for (let i = 0; i < ours.data.length; i++) {
      const d = Math.abs(ours.data[i]! - viaSharp[i]!);
      maxDiff = Math.max(maxDiff, d);
      sum += d;
    }
    expect(sum / ours.data.length).toBeLessThan(4); // same filter family …
    expect(maxDiff).toBeGreaterThan(0); // … but not the reference resampler
  });
});

describe('crop helpers', () => {
  test('cropImage picks the rows/columns; pythonRound rounds halves to even', () => {
    const img = grey(Array.from({ length: 12 }, (_, i) => i), 3, 4);
    expect(channel0(cropImage(img, 1, 1, 2, 2).data)).toEqual([5, 6, 9, 10]);
    expect([0.5, 1.5, 2.5, 2.4, 2.6, 37].map(pythonRound)).toEqual([0, 2, 2, 2, 3, 37]);
    expect(() => cropImage(img, 2, 0, 2, 2)).toThrow(/crop box outside the image/);
  });
});
