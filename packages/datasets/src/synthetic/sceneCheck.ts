/**
 * Test-only pixel checks of rendered synthetic scenes against their attributes (not exported): which pixels belong
 * to an object's color, shape templates, glyph reading. An evaluator of generated images needs a learned classifier
 * (eval package); these checks only prove that the renderer draws what the attributes say.
 */
import type { RgbImage } from '../source';
import { FONT_HEIGHT, FONT_WIDTH, GLYPH_CHARS, glyphBitmap } from './font';
import { SHAPES, type SceneObject, type ShapeName, type SyntheticAttributes } from './grammar';
import { colorRgb, rgbDistance, shapeInside, variantRgb, type Rgb } from './render';

export function pixel(img: RgbImage, x: number, y: number): Rgb {
  const o = (y * img.width + x) * 3;
  return [img.data[o]!, img.data[o + 1]!, img.data[o + 2]!];
}

/** Pixels nearer to `color` than to every other color of the scene (other objects, background tones). */
export function colorMask(img: RgbImage, a: SyntheticAttributes, color: Rgb): Uint8Array {
  const others: Rgb[] = [colorRgb(a.background.color)];
  if (a.background.pattern !== 'plain') others.push(variantRgb(a.background.color));
  for (const o of a.objects) {
    const c = colorRgb(o.color);
    if (rgbDistance(c, color) > 0) others.push(c);
  }
  const m = new Uint8Array(img.width * img.height);
  for (let y = 0; y < img.height; y++) {
    for (let x = 0; x < img.width; x++) {
      const p = pixel(img, x, y);
      const d = rgbDistance(p, color);
      m[y * img.width + x] = others.every((c) => d < rgbDistance(p, c)) ? 1 : 0;
    }
  }
  return m;
}

export function centroid(m: Uint8Array, w: number): [number, number, number] {
  let sx = 0;
  let sy = 0;
  let n = 0;
  m.forEach((v, i) => {
    if (v) {
      sx += (i % w) + 0.5;
      sy += Math.floor(i / w) + 0.5;
      n++;
    }
  });
  return [sx / n, sy / n, n];
}

/** 4-connected components. */
export function components(m: Uint8Array, w: number): number {
  const h = m.length / w;
  const seen = new Uint8Array(m.length);
  let count = 0;
  for (let i = 0; i < m.length; i++) {
    if (!m[i] || seen[i]) continue;
    count++;
    const stack = [i];
    seen[i] = 1;
    while (stack.length) {
      const j = stack.pop()!;
      const x = j % w;
      const y = Math.floor(j / w);
      for (const [nx, ny] of [
        [x - 1, y],
        [x + 1, y],
        [x, y - 1],
        [x, y + 1],
      ] as const) {
        if (nx < 0 || ny < 0 || nx >= w || ny >= h) continue;
        const k = ny * w + nx;
        if (m[k] && !seen[k]) {
          seen[k] = 1;
          stack.push(k);
        }
      }
    }
  }
  return count;
}

/** The shape whose ideal pixel-center mask (same center and radius) has the highest IoU with `m`. */
export function closestShape(m: Uint8Array, w: number, o: SceneObject): ShapeName {
  let best: ShapeName = 'circle';
  let bestIou = -1;
  for (const kind of SHAPES) {
    const inside = shapeInside(kind, o.radius);
    let inter = 0;
    let union = 0;
    for (let i = 0; i < m.length; i++) {
      const t = inside((i % w) + 0.5 - o.center[0], Math.floor(i / w) + 0.5 - o.center[1]) ? 1 : 0;
      if (t && m[i]) inter++;
      if (t || m[i]) union++;
    }
    const iou = inter / Math.max(1, union);
    if (iou > bestIou) {
      bestIou = iou;
      best = kind;
    }
  }
  return best;
}

/** Reads a glyph: ink at each 5×7 cell center of its box, best Hamming match among the glyph characters. */
export function readGlyph(m: Uint8Array, w: number, o: SceneObject): string {
  const [x0, y0, x1, y1] = o.box!;
  const bits = new Uint8Array(FONT_WIDTH * FONT_HEIGHT);
  for (let gy = 0; gy < FONT_HEIGHT; gy++) {
    for (let gx = 0; gx < FONT_WIDTH; gx++) {
      const x = Math.floor(x0 + ((gx + 0.5) * (x1 - x0)) / FONT_WIDTH);
      const y = Math.floor(y0 + ((gy + 0.5) * (y1 - y0)) / FONT_HEIGHT);
      bits[gy * FONT_WIDTH + gx] = m[y * w + x]!;
    }
  }
  let best = '?';
  let bestD = Infinity;
  let tie = false;
  for (const ch of GLYPH_CHARS) {
    const g = glyphBitmap(ch);
    let d = 0;
    for (let i = 0; i < g.length; i++) if (g[i] !== bits[i]) d++;
    if (d < bestD) {
      bestD = d;
      best = ch;
      tie = false;
    } else if (d === bestD) tie = true;
  }
  return tie ? '?' : best;
}
