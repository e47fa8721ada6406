import { Rng } from '@aptp/core';
import type { RgbImage } from '../source';
import { FONT_HEIGHT, FONT_WIDTH, glyphBitmap } from './font';
import { COLORS, type ColorName, type SceneBackground, type SceneObject, type ShapeName, type SyntheticAttributes } from './grammar';

/**
 * Pure-JavaScript rasteriser for synthetic scenes: the same bytes on every machine and backend. Shapes and glyphs
 * are anti-aliased by 4×4 supersampling (coverage-weighted blend over the background).
 */
const SUPERSAMPLE = 4;

export type Rgb = readonly [number, number, number];

export function colorRgb(c: ColorName): Rgb {
  return COLORS[c];
}

/** The second tone of a textured background: the color pushed 35 % toward black (light colors) or white (dark). */
export function variantRgb(c: ColorName): Rgb {
  const [r, g, b] = COLORS[c];
  const luma = 0.299 * r + 0.587 * g + 0.114 * b;
  const target = luma > 110 ? 0 : 255;
  return [Math.round(r + 0.35 * (target - r)), Math.round(g + 0.35 * (target - g)), Math.round(b + 0.35 * (target - b))];
}

export function rgbDistance(a: Rgb, b: Rgb): number {
  return Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2]);
}

/** Amplitude (±) of the noise background, in 8-bit levels. */
export const NOISE_AMPLITUDE = 14;

function drawBackground(img: RgbImage, bg: SceneBackground): void {
  const { width: w, height: h, data } = img;
  const a = colorRgb(bg.color);
  const b = variantRgb(bg.color);
  const period = Math.max(4, Math.round(w / 8));
  const noise = bg.pattern === 'noise' ? Rng.forKey(bg.noiseSeed ?? 0, 'backgroundNoise') : undefined;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let t = 0; // 0 → color, 1 → variant
      switch (bg.pattern) {
        case 'stripes': {
          const u = bg.orientation === 'horizontal' ? y : bg.orientation === 'vertical' ? x : x + y;
          t = Math.floor(u / (period / 2)) % 2;
          break;
        }
        case 'checker':
          t = (Math.floor(x / period) + Math.floor(y / period)) % 2;
          break;
        case 'gradient':
          t = (bg.orientation === 'vertical' ? y + 0.5 : x + 0.5) / (bg.orientation === 'vertical' ? h : w);
          break;
        default:
          t = 0;
      }
      const o = (y * w + x) * 3;
      const jitter = noise ? Math.round((noise.nextDouble() * 2 - 1) * NOISE_AMPLITUDE) : 0;
      for (let k = 0; k < 3; k++) data[o + k] = clamp8(a[k]! + t * (b[k]! - a[k]!) + jitter);
    }
  }
}

function clamp8(v: number): number {
  return Math.max(0, Math.min(255, Math.round(v)));
}

type Inside = (dx: number, dy: number) => boolean;

function pointInPolygon(px: number, py: number, xs: number[], ys: number[]): boolean {
  let inside = false;
  for (let i = 0, j = xs.length - 1; i < xs.length; j = i++) {
    if (ys[i]! > py !== ys[j]! > py && px < ((xs[j]! - xs[i]!) * (py - ys[i]!)) / (ys[j]! - ys[i]!) + xs[i]!) inside = !inside;
  }
  return inside;
}

function polygon(points: [number, number][]): Inside {
  const xs = points.map((p) => p[0]);
  const ys = points.map((p) => p[1]);
  return (dx, dy) => pointInPolygon(dx, dy, xs, ys);
}

/** Inside-tests in object coordinates (dx, dy relative to the center) for a shape of outer radius r. */
export function shapeInside(kind: ShapeName, r: number): Inside {
  switch (kind) {
    case 'circle':
      return (dx, dy) => dx * dx + dy * dy <= r * r;
    case 'square': {
      const s = 0.82 * r;
      return (dx, dy) => Math.abs(dx) <= s && Math.abs(dy) <= s;
    }
    case 'triangle':
      return polygon([
        [0, -r],
        [0.95 * r, 0.8 * r],
        [-0.95 * r, 0.8 * r],
      ]);
    case 'diamond':
      return (dx, dy) => Math.abs(dx) + Math.abs(dy) <= r;
    case 'cross': {
      const arm = 0.33 * r;
      return (dx, dy) => (Math.abs(dx) <= arm && Math.abs(dy) <= r) || (Math.abs(dy) <= arm && Math.abs(dx) <= r);
    }
    case 'ring': {
      const inner = 0.55 * r;
      return (dx, dy) => {
        const d2 = dx * dx + dy * dy;
        return d2 <= r * r && d2 >= inner * inner;
      };
    }
    case 'star': {
      const pts: [number, number][] = [];
      for (let i = 0; i < 10; i++) {
        const rad = i % 2 === 0 ? r : 0.45 * r;
        const ang = -Math.PI / 2 + (i * Math.PI) / 5;
        pts.push([rad * Math.cos(ang), rad * Math.sin(ang)]);
      }
      return polygon(pts);
    }
  }
}

/** Blends `color` into the pixels of [x0, x1) × [y0, y1) by the supersampled coverage of `inside(x, y)` (pixel units). */
function fill(img: RgbImage, color: Rgb, x0: number, y0: number, x1: number, y1: number, inside: (x: number, y: number) => boolean): void {
  const n = SUPERSAMPLE;
  const xa = Math.max(0, Math.floor(x0));
  const ya = Math.max(0, Math.floor(y0));
  const xb = Math.min(img.width, Math.ceil(x1));
  const yb = Math.min(img.height, Math.ceil(y1));
  for (let y = ya; y < yb; y++) {
    for (let x = xa; x < xb; x++) {
      let hits = 0;
      for (let sy = 0; sy < n; sy++) for (let sx = 0; sx < n; sx++) if (inside(x + (sx + 0.5) / n, y + (sy + 0.5) / n)) hits++;
      if (hits === 0) continue;
      const cov = hits / (n * n);
      const o = (y * img.width + x) * 3;
      for (let k = 0; k < 3; k++) img.data[o + k] = clamp8(img.data[o + k]! + cov * (color[k]! - img.data[o + k]!));
    }
  }
}

function drawObject(img: RgbImage, o: SceneObject): void {
  const color = colorRgb(o.color);
  const [cx, cy] = o.center;
  if (o.kind === 'glyph') {
    const [bx0, by0, bx1, by1] = o.box!;
    const bits = glyphBitmap(o.glyph!);
    const cw = (bx1 - bx0) / FONT_WIDTH;
    const ch = (by1 - by0) / FONT_HEIGHT;
    fill(img, color, bx0, by0, bx1, by1, (x, y) => {
      const gx = Math.floor((x - bx0) / cw);
      const gy = Math.floor((y - by0) / ch);
      return gx >= 0 && gx < FONT_WIDTH && gy >= 0 && gy < FONT_HEIGHT && bits[gy * FONT_WIDTH + gx] === 1;
    });
    return;
  }
  const inside = shapeInside(o.kind, o.radius);
  const r = o.radius + 1;
  fill(img, color, cx - r, cy - r, cx + r, cy + r, (x, y) => inside(x - cx, y - cy));
}

/** Renders a scene to RGB pixels at `attributes.imageSize`². Deterministic: a pure function of the attributes. */
export function renderScene(a: SyntheticAttributes): RgbImage {
  const size = a.imageSize;
  const img: RgbImage = { width: size, height: size, data: new Uint8Array(size * size * 3) };
  drawBackground(img, a.background);
  for (const o of a.objects) drawObject(img, o);
  return img;
}
