import { Rng, writeFileAtomic } from '@aptp/core';
import { decodeImage, encodePng, imageSize } from './image/decode';
import { resizedSize, cropAndFlip, transformPreset } from './image/transforms';
import { isSkipped, type ImageInput, type RgbImage, type Source, type SourceRow } from './source';
import { FONT_HEIGHT, FONT_WIDTH, glyphBitmap } from './synthetic/font';

/**
 * Contact sheets: a grid of samples with their captions underneath, drawn with the built-in bitmap font, written as
 * PNG, so anyone can check by eye that images match their captions (shapes, colors, positions, glyphs).
 */
export interface ContactSheetTile {
  image: RgbImage;
  caption: string;
}

export interface ContactSheetOptions {
  /** Tiles per row (default 8). */
  columns?: number;
  /** Integer upscale of each image, nearest neighbour (default: enough to make tiles ≥ 96 px wide). */
  scale?: number;
  /** Caption lines under each tile (default 4; longer captions end with "…" as "..."). */
  captionLines?: number;
}

const PAD = 4;
const LINE_GAP = 2;
const SHEET_BG = 24;
const TEXT = 235;

/** Word-wraps `text` to lines of at most `width` characters. */
export function wrapText(text: string, width: number, maxLines: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/).filter((w) => w !== '')) {
    let w = word;
    while (w.length > width) {
      if (line) lines.push(line);
      lines.push(w.slice(0, width));
      w = w.slice(width);
      line = '';
    }
    if (!line) line = w;
    else if (line.length + 1 + w.length <= width) line += ` ${w}`;
    else {
      lines.push(line);
      line = w;
    }
  }
  if (line) lines.push(line);
  if (lines.length > maxLines) {
    const kept = lines.slice(0, maxLines);
    kept[maxLines - 1] = `${kept[maxLines - 1]!.slice(0, Math.max(0, width - 3))}...`;
    return kept;
  }
  return lines;
}

/** Draws `text` with the 5×7 font at integer `scale`, top-left at (x, y). */
export function drawText(img: RgbImage, text: string, x: number, y: number, gray = TEXT, scale = 1): void {
  for (let i = 0; i < text.length; i++) {
    const bits = glyphBitmap(text[i]!);
    const gx = x + i * (FONT_WIDTH + 1) * scale;
    for (let py = 0; py < FONT_HEIGHT * scale; py++) {
      for (let px = 0; px < FONT_WIDTH * scale; px++) {
        if (bits[Math.floor(py / scale) * FONT_WIDTH + Math.floor(px / scale)] !== 1) continue;
        const X = gx + px;
        const Y = y + py;
        if (X < 0 || Y < 0 || X >= img.width || Y >= img.height) continue;
        const o = (Y * img.width + X) * 3;
        img.data[o] = img.data[o + 1] = img.data[o + 2] = gray;
      }
    }
  }
}

/** Nearest-neighbour resample to w × h. */
function resampleNearest(src: RgbImage, w: number, h: number): RgbImage {
  const out = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    const sy = Math.min(src.height - 1, Math.floor((y * src.height) / h));
    for (let x = 0; x < w; x++) {
      const sx = Math.min(src.width - 1, Math.floor((x * src.width) / w));
      const s = (sy * src.width + sx) * 3;
      const d = (y * w + x) * 3;
      out[d] = src.data[s]!;
      out[d + 1] = src.data[s + 1]!;
      out[d + 2] = src.data[s + 2]!;
    }
  }
  return { width: w, height: h, data: out };
}

export function renderContactSheet(tiles: readonly ContactSheetTile[], options: ContactSheetOptions = {}): RgbImage {
  const first = tiles[0]?.image ?? { width: 32, height: 32, data: new Uint8Array(32 * 32 * 3) };
  const scale = options.scale ?? Math.max(1, Math.ceil(96 / first.width));
  const columns = Math.max(1, Math.min(options.columns ?? 8, tiles.length || 1));
  const maxLines = options.captionLines ?? 4;
  const tileW = first.width * scale;
  const tileH = first.height * scale;
  const charsPerLine = Math.max(4, Math.floor((tileW + 1) / (FONT_WIDTH + 1)));
  const textH = maxLines * (FONT_HEIGHT + LINE_GAP);
  const cellW = tileW + PAD;
  const cellH = tileH + PAD + textH + PAD;
  const rows = Math.max(1, Math.ceil(tiles.length / columns));
  const sheet: RgbImage = { width: PAD + columns * cellW, height: PAD + rows * cellH, data: new Uint8Array((PAD + columns * cellW) * (PAD + rows * cellH) * 3).fill(SHEET_BG) };
  tiles.forEach((t, i) => {
    const x0 = PAD + (i % columns) * cellW;
    const y0 = PAD + Math.floor(i / columns) * cellH;
    const img = t.image.width === tileW && t.image.height === tileH ? t.image : resampleNearest(t.image, tileW, tileH);
    for (let y = 0; y < tileH; y++) {
      const src = img.data.subarray(y * tileW * 3, (y + 1) * tileW * 3);
      sheet.data.set(src, ((y0 + y) * sheet.width + x0) * 3);
    }
    wrapText(t.caption, charsPerLine, maxLines).forEach((line, k) => drawText(sheet, line, x0, y0 + tileH + PAD + k * (FONT_HEIGHT + LINE_GAP)));
  });
  return sheet;
}

/** Renders and writes a contact sheet PNG atomically. */
export async function writeContactSheet(file: string, tiles: readonly ContactSheetTile[], options: ContactSheetOptions = {}): Promise<RgbImage> {
  const sheet = renderContactSheet(tiles, options);
  writeFileAtomic(file, await encodePng(sheet));
  return sheet;
}

/** An image for a tile: pixels as they are, files decoded → Resize → CenterCrop to `resolution`. */
async function tileImage(input: ImageInput, resolution: number): Promise<RgbImage> {
  if (input.kind === 'pixels') return input.image;
  const t = transformPreset('evalCenter', resolution);
  const size = await imageSize(input);
  const img = await decodeImage(input, { resize: resizedSize(size.width, size.height, t) });
  const c = cropAndFlip(img.width, img.height, t, Rng.forKey(0)); // center crop, no flip: draws nothing
  const out = new Uint8Array(c.width * c.height * 3);
  for (let y = 0; y < c.height; y++) out.set(img.data.subarray(((c.top + y) * img.width + c.left) * 3, ((c.top + y) * img.width + c.left + c.width) * 3), y * c.width * 3);
  return { width: c.width, height: c.height, data: out };
}

/**
 * The first `count` readable rows of a source (in source order) as tiles; unreadable rows are left out and returned
 * in `skipped`.
 */
export async function sourceTiles(source: Source<unknown>, options: { count?: number; resolution?: number } = {}): Promise<{ tiles: ContactSheetTile[]; skipped: string[] }> {
  const count = options.count ?? 32;
  const tiles: ContactSheetTile[] = [];
  const skipped: string[] = [];
  const take = async (row: SourceRow<unknown>): Promise<void> => {
    if (isSkipped(row)) {
      skipped.push(row.file);
      return;
    }
    try {
      tiles.push({ image: await tileImage(row.image, options.resolution ?? 96), caption: row.caption });
    } catch (err) {
      skipped.push((err as { file?: string }).file ?? row.id);
    }
  };
  if (source.kind === 'indexed') {
    for (let i = 0; i < source.length && tiles.length < count; i++) await take(await source.get(i));
  } else {
    for (let s = 0; s < source.shards.length && tiles.length < count; s++) {
      for await (const row of source.readShard(s)) {
        await take(row);
        if (tiles.length >= count) break;
      }
    }
  }
  return { tiles, skipped };
}
