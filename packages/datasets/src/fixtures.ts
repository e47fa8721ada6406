/**
 * Test-only helpers (not exported from the package): small images made with sharp in a temp dir, and a palette of
 * well-separated colors so a test can tell which row an image came from after decoding and resizing.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';

const made: string[] = [];
// Registered in the importing test file: its temp dirs are removed when it ends.
afterAll(() => {
  for (const dir of made.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

export function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'aptp-datasets-'));
  made.push(dir);
  return dir;
}

/** Colors at least ~150 apart in RGB. */
export const PALETTE: [number, number, number][] = [
  [230, 20, 20],
  [20, 200, 40],
  [20, 40, 230],
  [240, 230, 20],
  [230, 20, 230],
  [20, 220, 230],
  [250, 250, 250],
  [10, 10, 10],
];

export async function solidImage(rgb: [number, number, number], width: number, height: number, format: 'jpeg' | 'png' | 'webp' = 'jpeg'): Promise<Buffer> {
  const s = sharp({ create: { width, height, channels: 3, background: { r: rgb[0], g: rgb[1], b: rgb[2] } } });
  return format === 'jpeg' ? s.jpeg({ quality: 95 }).toBuffer() : format === 'png' ? s.png().toBuffer() : s.webp({ lossless: true }).toBuffer();
}

/** A noisy JPEG (many DCT blocks), whose first 60 % has a valid header but truncated scan data. */
export async function truncatedJpeg(): Promise<Buffer> {
  const n = 64 * 64 * 3;
  const raw = Buffer.alloc(n);
  for (let i = 0; i < n; i++) raw[i] = (i * 7919) % 251;
  const full = await sharp(raw, { raw: { width: 64, height: 64, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
  return full.subarray(0, Math.floor(full.length * 0.6));
}

/** Index of the palette color nearest to the mean color of a `[3, H, W]` image in [−1, 1]. */
export function paletteIndex(pixels: Float32Array, offset: number, plane: number): number {
  const mean = [0, 1, 2].map((c) => {
    let s = 0;
    for (let i = 0; i < plane; i++) s += pixels[offset + c * plane + i]!;
    return ((s / plane + 1) * 255) / 2;
  });
  let best = -1;
  let bestD = Infinity;
  PALETTE.forEach((p, i) => {
    const d = Math.hypot(p[0] - mean[0]!, p[1] - mean[1]!, p[2] - mean[2]!);
    if (d < bestD) {
      bestD = d;
      best = i;
    }
  });
  return bestD < 40 ? best : -1;
}
