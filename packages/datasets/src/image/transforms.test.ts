import sharp from 'sharp';
import { Rng } from '@aptp/core';
import { cropAndFlip, prepareImage, resizedSize, toNormalizedChw, transformPreset, type ImageTransform } from './transforms';

describe('image transforms (APTP.md §7.3)', () => {
  const train = transformPreset('train', 256);

  it('resizes the shorter side like torchvision Resize(int): long side = int(size * long / short)', () => {
    expect(resizedSize(640, 480, train)).toEqual({ width: 341, height: 256 }); // 256*640/480 = 341.33
    expect(resizedSize(480, 640, train)).toEqual({ width: 256, height: 341 });
    expect(resizedSize(333, 500, train)).toEqual({ width: 256, height: 384 }); // 384.38 → 384
    expect(resizedSize(100, 100, train)).toEqual({ width: 256, height: 256 }); // upscales too
    expect(resizedSize(640, 480, transformPreset('coco30kReference', 256))).toEqual({ width: 256, height: 256 });
    expect(resizedSize(17, 9, transformPreset('synthetic', 32))).toEqual({ width: 17, height: 9 });
  });

  it('center crop rounds half to even like Python round()', () => {
    const t = transformPreset('evalCenter', 4);
    // (9 - 4) / 2 = 2.5 → 2; (11 - 4) / 2 = 3.5 → 4
    expect(cropAndFlip(9, 11, t, Rng.forKey(0))).toEqual({ top: 4, left: 2, height: 4, width: 4, flip: false });
  });

  it('random crops cover every offset uniformly and flip about half of the time', () => {
    const t = transformPreset('train', 4);
    const lefts = new Array<number>(7).fill(0);
    let flips = 0;
    const n = 7000;
    for (let i = 0; i < n; i++) {
      const c = cropAndFlip(10, 4, t, Rng.forKey(1, 'crop', i));
      expect(c.top).toBe(0);
      lefts[c.left]!++;
      if (c.flip) flips++;
    }
    for (const count of lefts) expect(Math.abs(count - n / 7)).toBeLessThan(5 * Math.sqrt(n / 7));
    expect(Math.abs(flips - n / 2)).toBeLessThan(5 * Math.sqrt(n / 4));
    expect(cropAndFlip(10, 4, transformPreset('eval', 4), Rng.forKey(3)).flip).toBe(false);
  });

  it('normalises to [-1, 1] channels-first, flipping horizontally', () => {
    // 3×2 image; R channel holds 0, 51, 102 / 153, 204, 255 row-major.
    const data = new Uint8Array(18);
    for (let i = 0; i < 6; i++) data.set([i * 51, 255 - i * 51, 7], i * 3);
    const image = { width: 3, height: 2, data };
    const plain = toNormalizedChw(image, { top: 0, left: 1, height: 2, width: 2, flip: false });
    expect(Array.from(plain.subarray(0, 4))).toEqual(Array.from(Float32Array.from([51, 102, 204, 255], (v) => v / 127.5 - 1)));
    expect(plain[4]).toBeCloseTo((255 - 51) / 127.5 - 1, 6);
    const flipped = toNormalizedChw(image, { top: 0, left: 1, height: 2, width: 2, flip: true });
    expect(Array.from(flipped.subarray(0, 4))).toEqual(Array.from(Float32Array.from([102, 51, 255, 204], (v) => v / 127.5 - 1)));
    expect(Math.max(...plain)).toBeLessThanOrEqual(1);
    expect(Math.min(...plain)).toBeGreaterThanOrEqual(-1);
  });

  it('prepareImage: decode → resize → crop → flip end to end; a left-red/right-blue image flips to blue-left', async () => {
    // 40×20: left half red, right half blue.
    const raw = Buffer.alloc(40 * 20 * 3);
    for (let y = 0; y < 20; y++) for (let x = 0; x < 40; x++) raw.set(x < 20 ? [255, 0, 0] : [0, 0, 255], (y * 40 + x) * 3);
    const png = await sharp(raw, { raw: { width: 40, height: 20, channels: 3 } }).png().toBuffer();
    const input = { kind: 'bytes' as const, bytes: png, name: 'halves.png' };
    const center: ImageTransform = { resolution: 10, resize: 'shorterSide', crop: 'center', flip: false, interpolation: 'bilinear' };
    const a = await prepareImage(input, center, Rng.forKey(0));
    expect([a.width, a.height, a.pixels.length]).toEqual([10, 10, 300]);
    // resized to 20×10, center crop columns 5..14: left 5 columns red, right 5 blue.
    expect(a.pixels[0]).toBeCloseTo(1, 5); // R at (0, 0)
    expect(a.pixels[200 + 9]).toBeCloseTo(1, 5); // B at (0, 9)
    let flipped: Awaited<ReturnType<typeof prepareImage>> | undefined;
    for (let k = 0; k < 20 && !flipped; k++) {
      const p = await prepareImage(input, { ...center, flip: true }, Rng.forKey(0, k));
      if (p.crop.flip) flipped = p;
    }
    expect(flipped).toBeDefined();
    expect(flipped!.pixels[0]).toBeCloseTo(-1, 5); // R at (0, 0) after the flip: blue side
    expect(flipped!.pixels[200]).toBeCloseTo(1, 5);
  });
});
