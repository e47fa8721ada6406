import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { InputError } from '@aptp/core';
import { solidImage, tempDir, truncatedJpeg } from '../fixtures';
import { decodeImage, imageSize } from './decode';

describe('decodeImage', () => {
  const dir = tempDir();

  it('decodes PNG, lossless WebP, gray PNG and RGBA PNG to exact 8-bit RGB', async () => {
    const png = await solidImage([10, 120, 250], 5, 3, 'png');
    const webp = await solidImage([200, 30, 90], 4, 4, 'webp');
    const gray = await sharp({ create: { width: 3, height: 2, channels: 3, background: { r: 77, g: 77, b: 77 } } }).toColourspace('b-w').png().toBuffer();
    const rgba = await sharp({ create: { width: 2, height: 2, channels: 4, background: { r: 1, g: 2, b: 3, alpha: 0.25 } } }).png().toBuffer();
    const cases: [Buffer, number, number, number[]][] = [
      [png, 5, 3, [10, 120, 250]],
      [webp, 4, 4, [200, 30, 90]],
      [gray, 3, 2, [77, 77, 77]],
      [rgba, 2, 2, [1, 2, 3]], // alpha dropped, not composited (PIL convert('RGB'))
    ];
    for (const [bytes, w, h, rgb] of cases) {
      const img = await decodeImage({ kind: 'bytes', bytes, name: 'x' });
      expect([img.width, img.height, img.data.length]).toEqual([w, h, w * h * 3]);
      for (let i = 0; i < w * h; i++) expect(Array.from(img.data.subarray(i * 3, i * 3 + 3))).toEqual(rgb);
    }
  });

  it('resizes in the same pipeline and reads sizes from the header', async () => {
    const file = path.join(dir, 'a.jpg');
    fs.writeFileSync(file, await solidImage([250, 0, 0], 40, 30));
    expect(await imageSize({ kind: 'file', path: file })).toEqual({ width: 40, height: 30 });
    const img = await decodeImage({ kind: 'file', path: file }, { resize: { width: 8, height: 6 } });
    expect([img.width, img.height]).toEqual([8, 6]);
    expect(Math.abs(img.data[0]! - 250)).toBeLessThanOrEqual(4);
  });

  it('classifies broken files by skip reason and names the file', async () => {
    const files: Record<string, Buffer | string> = {
      'truncated.jpg': await truncatedJpeg(),
      'zero.jpg': Buffer.alloc(0),
      'text.jpg': 'this is not an image at all',
    };
    for (const [name, data] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), data);
    const expectations: [string, string][] = [
      ['truncated.jpg', 'truncatedImage'],
      ['zero.jpg', 'emptyFile'],
      ['text.jpg', 'unreadableImage'],
      ['missing.jpg', 'missingImage'],
    ];
    for (const [name, code] of expectations) {
      const file = path.join(dir, name);
      const err = await decodeImage({ kind: 'file', path: file }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InputError);
      expect((err as InputError).code).toBe(code);
      expect((err as InputError).file).toBe(file);
      expect((err as InputError).message).toContain(file);
    }
  });
});
