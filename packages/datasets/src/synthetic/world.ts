import { z } from 'zod';
import { ConfigError, Rng } from '@aptp/core';
import type { IndexedSource, RgbImage, SourceRow } from '../source';
import { GLYPH_CHARS } from './font';
import {
  BACKGROUND_PATTERNS,
  CATEGORIES,
  COLOR_NAMES,
  COUNT_SHAPES,
  POSITIONS,
  RELATIONS,
  SHAPES,
  SIZES,
  captionFor,
  type AttributeName,
  type BackgroundPattern,
  type ColorName,
  type PositionName,
  type PromptCategory,
  type SceneBackground,
  type SceneObject,
  type SizeName,
  type SyntheticAttributes,
} from './grammar';
import { colorRgb, renderScene, rgbDistance, variantRgb } from './render';

/**
 * The synthetic world: the built-in text-to-image data set that lets the whole APTP pipeline run on a laptop CPU.
 * Samples are generated on the fly, deterministic per (seed, split, index), `imageSize`² RGB (32 by default).
 *
 * Splits never share a prompt: a caption belongs to the validation split iff a hash of its text falls below
 * `validationFraction`; sample i of a split is the first candidate scene drawn from Rng(seed, i, attempt) whose
 * caption belongs to that split.
 */
const DEFAULT_BACKGROUND_WEIGHTS: Record<BackgroundPattern, number> = { plain: 0.4, stripes: 0.15, checker: 0.15, gradient: 0.15, noise: 0.15 };
const DEFAULT_SIZE_WEIGHTS: Record<SizeName, number> = { small: 1, medium: 1, large: 1 };

export const syntheticConfigSchema = z.strictObject({
  format: z.literal('synthetic'),
  seed: z.number().int().min(0).default(0).describe('world seed; the same seed gives the same samples everywhere'),
  split: z.enum(['train', 'validation']).default('train').describe('prompt-disjoint split'),
  imageSize: z.number().int().min(16).max(1024).default(32).describe('image side in pixels'),
  numSamples: z.number().int().positive().default(100_000).describe('rows of this split the source exposes'),
  validationFraction: z.number().gt(0).lt(1).default(0.1).describe('share of all prompts reserved for validation'),
  categoryWeights: z
    .strictObject({
      shape: z.number().min(0),
      count: z.number().min(0),
      relation: z.number().min(0),
      text: z.number().min(0),
    })
    .default({ shape: 0.35, count: 0.2, relation: 0.25, text: 0.2 })
    .describe('relative frequency of each prompt category'),
  backgroundWeights: z
    .strictObject({
      plain: z.number().min(0),
      stripes: z.number().min(0),
      checker: z.number().min(0),
      gradient: z.number().min(0),
      noise: z.number().min(0),
    })
    .default(DEFAULT_BACKGROUND_WEIGHTS)
    .describe('relative frequency of each pattern of a background the caption mentions (an unmentioned one is plain)'),
  sizeWeights: z
    .strictObject({ small: z.number().min(0), medium: z.number().min(0), large: z.number().min(0) })
    .default(DEFAULT_SIZE_WEIGHTS)
    .describe('relative frequency of each size of a shape-category object (equal weights: the default world)'),
});
export type SyntheticConfig = z.input<typeof syntheticConfigSchema>;
export type SyntheticSplit = 'train' | 'validation';

export interface SyntheticPrompt {
  id: string;
  caption: string;
  attributes: SyntheticAttributes;
}

export interface SyntheticSample extends SyntheticPrompt {
  image: RgbImage;
}

/** Shape radius as a fraction of the image side. */
export const SIZE_RADIUS: Record<SizeName, number> = { small: 0.12, medium: 0.18, large: 0.25 };
const COUNT_RADIUS = 0.095;
const RELATION_RADIUS = 0.16;
/** Minimum RGB distance between an object's color and the background's colors. */
const BG_CONTRAST = 110;
/** Minimum RGB distance between the two colors of a relation prompt. */
const PAIR_CONTRAST = 80;

/** FNV-1a of the caption: the prompt's split does not depend on the seed. */
export function promptHash(caption: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < caption.length; i++) h = Math.imul(h ^ caption.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

export function splitOfPrompt(caption: string, validationFraction: number): SyntheticSplit {
  return promptHash(caption) % 10000 < Math.round(validationFraction * 10000) ? 'validation' : 'train';
}

/** Grid cell of a point. */
export function positionOf(x: number, y: number, size: number): PositionName {
  const col = Math.min(2, Math.max(0, Math.floor((3 * x) / size)));
  const row = Math.min(2, Math.max(0, Math.floor((3 * y) / size)));
  return POSITIONS[row * 3 + col]!;
}

const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[rng.nextInt(xs.length)]!;

/** One of `xs` with probability ∝ its weight (one `nextDouble`); `fallback` if rounding runs past the last one. */
function pickWeighted<T extends string>(rng: Rng, xs: readonly T[], weights: Record<T, number>, fallback: T): T {
  let u = rng.nextDouble() * xs.reduce((a, x) => a + weights[x], 0);
  for (const x of xs) {
    u -= weights[x];
    if (u < 0 && weights[x] > 0) return x;
  }
  return fallback;
}
const uniform = (rng: Rng, lo: number, hi: number): number => lo + (hi - lo) * rng.nextDouble();
const clamp = (v: number, lo: number, hi: number): number => Math.max(lo, Math.min(hi, v));

function shapeScene(rng: Rng, S: number, sizeWeights: Record<SizeName, number>): { objects: SceneObject[]; mentioned: AttributeName[] } {
  const kind = pick(rng, SHAPES);
  const color = pick(rng, COLOR_NAMES);
  // equal weights (the default world) keep the uniform draw, so the default world's samples never change
  const size = SIZES.every((k) => sizeWeights[k] === sizeWeights.small) ? pick(rng, SIZES) : pickWeighted(rng, SIZES, sizeWeights, 'large');
  const cell = rng.nextInt(9);
  const r = SIZE_RADIUS[size] * S;
  const fx = [0.2, 0.5, 0.8][cell % 3]!;
  const fy = [0.2, 0.5, 0.8][Math.floor(cell / 3)]!;
  const cx = clamp((fx + uniform(rng, -0.05, 0.05)) * S, r + 0.5, S - r - 0.5);
  const cy = clamp((fy + uniform(rng, -0.05, 0.05)) * S, r + 0.5, S - r - 0.5);
  const mentioned: AttributeName[] = ['shape', 'color'];
  if (rng.nextDouble() < 0.6) mentioned.push('size');
  if (rng.nextDouble() < 0.75) mentioned.push('position');
  return { objects: [{ kind, color, size, position: positionOf(cx, cy, S), center: [cx, cy], radius: r }], mentioned };
}

function countScene(rng: Rng, S: number): { objects: SceneObject[]; count: number; mentioned: AttributeName[] } {
  const count = 2 + rng.nextInt(4);
  const kind = pick(rng, COUNT_SHAPES);
  const color = pick(rng, COLOR_NAMES);
  const r = COUNT_RADIUS * S;
  const minDist = 2 * r + Math.max(2, 0.08 * S);
  const centers: [number, number][] = [];
  for (let attempt = 0; centers.length < count && attempt < 500; attempt++) {
    const c: [number, number] = [uniform(rng, r + 1, S - r - 1), uniform(rng, r + 1, S - r - 1)];
    if (centers.every((p) => Math.hypot(p[0] - c[0], p[1] - c[1]) >= minDist)) centers.push(c);
  }
  if (centers.length < count) {
    // Fallback (rare): a fixed 3×2 layout, still deterministic.
    centers.length = 0;
    for (let i = 0; i < count; i++) centers.push([((i % 3) + 0.5) * (S / 3), (Math.floor(i / 3) + 0.5) * (S / 2)]);
  }
  const objects = centers.map((c): SceneObject => ({ kind, color, size: 'small', position: positionOf(c[0], c[1], S), center: c, radius: r }));
  return { objects, count, mentioned: ['shape', 'color', 'count'] };
}

function relationScene(rng: Rng, S: number): { objects: SceneObject[]; relation: (typeof RELATIONS)[number]; mentioned: AttributeName[] } {
  const relation = pick(rng, RELATIONS);
  const colorA = pick(rng, COLOR_NAMES);
  const others = COLOR_NAMES.filter((c) => rgbDistance(colorRgb(c), colorRgb(colorA)) >= PAIR_CONTRAST);
  const colorB = pick(rng, others);
  const kindA = pick(rng, SHAPES);
  const kindB = pick(rng, SHAPES);
  const r = RELATION_RADIUS * S;
  const near = uniform(rng, 0.17, 0.3) * S;
  const far = uniform(rng, 0.7, 0.83) * S;
  const across1 = clamp(uniform(rng, 0.3, 0.7) * S, r + 0.5, S - r - 0.5);
  const across2 = clamp(across1 + uniform(rng, -0.12, 0.12) * S, r + 0.5, S - r - 0.5);
  const along1 = clamp(relation === 'left of' || relation === 'above' ? near : far, r + 0.5, S - r - 0.5);
  const along2 = clamp(relation === 'left of' || relation === 'above' ? far : near, r + 0.5, S - r - 0.5);
  const horizontal = relation === 'left of' || relation === 'right of';
  const c1: [number, number] = horizontal ? [along1, across1] : [across1, along1];
  const c2: [number, number] = horizontal ? [along2, across2] : [across2, along2];
  const obj = (kind: SceneObject['kind'], color: ColorName, c: [number, number]): SceneObject => ({ kind, color, size: 'medium', position: positionOf(c[0], c[1], S), center: c, radius: r });
  return { objects: [obj(kindA, colorA, c1), obj(kindB, colorB, c2)], relation, mentioned: ['shape', 'color', 'relation'] };
}

function textScene(rng: Rng, S: number): { objects: SceneObject[]; text: string; mentioned: AttributeName[] } {
  const len = rng.nextDouble() < 0.7 ? 1 : 2;
  let text = '';
  for (let i = 0; i < len; i++) text += pick(rng, GLYPH_CHARS.split(''));
  const color = pick(rng, COLOR_NAMES);
  const h = (len === 1 ? 0.6 : 0.42) * S;
  const w = (h * 5) / 7;
  const gap = h / 7;
  const total = len * w + (len - 1) * gap;
  const cx = S / 2 + uniform(rng, -0.05, 0.05) * S * (len === 1 ? 1 : 0.5);
  const cy = S / 2 + uniform(rng, -0.05, 0.05) * S;
  const objects = text.split('').map((glyph, i): SceneObject => {
    const x0 = cx - total / 2 + i * (w + gap);
    const center: [number, number] = [x0 + w / 2, cy];
    return { kind: 'glyph', color, size: len === 1 ? 'large' : 'medium', position: positionOf(center[0], center[1], S), center, radius: h / 2, glyph, box: [x0, cy - h / 2, x0 + w, cy + h / 2] };
  });
  return { objects, text, mentioned: ['text', 'color'] };
}

function background(rng: Rng, objects: SceneObject[], mention: boolean, patternWeights: Record<BackgroundPattern, number>): SceneBackground | undefined {
  const objColors = objects.map((o) => colorRgb(o.color));
  if (!mention) {
    const color = (['black', 'white', 'gray'] as const).find((c) => objColors.every((o) => rgbDistance(o, colorRgb(c)) >= BG_CONTRAST))!;
    return { pattern: 'plain', color };
  }
  const pattern = pickWeighted(rng, BACKGROUND_PATTERNS, patternWeights, 'plain');
  const usable = COLOR_NAMES.filter((c) => objColors.every((o) => rgbDistance(o, colorRgb(c)) >= BG_CONTRAST && (pattern === 'plain' || rgbDistance(o, variantRgb(c)) >= BG_CONTRAST - 20)));
  if (usable.length === 0) return undefined;
  const color = pick(rng, usable);
  const bg: SceneBackground = { pattern, color };
  if (pattern === 'stripes') bg.orientation = pick(rng, ['horizontal', 'vertical', 'diagonal'] as const);
  if (pattern === 'gradient') bg.orientation = pick(rng, ['horizontal', 'vertical'] as const);
  if (pattern === 'noise') bg.noiseSeed = rng.nextUint32();
  return bg;
}

/** Draws one scene and its caption from `rng` (attributes + caption; no pixels). */
export function sampleScene(
  rng: Rng,
  imageSize: number,
  weights: Record<PromptCategory, number>,
  patternWeights: Record<BackgroundPattern, number> = DEFAULT_BACKGROUND_WEIGHTS,
  sizeWeights: Record<SizeName, number> = DEFAULT_SIZE_WEIGHTS,
): { caption: string; attributes: SyntheticAttributes } {
  const category = pickWeighted(rng, CATEGORIES, weights, CATEGORIES[CATEGORIES.length - 1]!);
  const S = imageSize;
  const scene =
    category === 'shape' ? shapeScene(rng, S, sizeWeights) : category === 'count' ? countScene(rng, S) : category === 'relation' ? relationScene(rng, S) : textScene(rng, S);
  const mention = rng.nextDouble() < (category === 'shape' ? 0.4 : 0.3);
  let bg = background(rng, scene.objects, mention, patternWeights);
  const mentioned = [...scene.mentioned];
  if (bg && mention) mentioned.push('background');
  bg ??= background(rng, scene.objects, false, patternWeights)!;
  const attributes: SyntheticAttributes = { category, imageSize: S, objects: scene.objects, background: bg, mentioned, template: '' };
  if ('relation' in scene) attributes.relation = scene.relation as SyntheticAttributes['relation'];
  if ('count' in scene) attributes.count = scene.count as number;
  if ('text' in scene) attributes.text = scene.text as string;
  const { caption, template } = captionFor(attributes, rng);
  attributes.template = template;
  return { caption, attributes };
}

/** Attempts before giving up on finding a prompt of the requested split (only reachable with tiny fractions). */
const MAX_ATTEMPTS = 100_000;

export class SyntheticWorld {
  readonly config: z.infer<typeof syntheticConfigSchema>;

  constructor(config: Partial<SyntheticConfig> = {}) {
    this.config = syntheticConfigSchema.parse({ format: 'synthetic', ...config });
    const w = this.config.categoryWeights;
    if (CATEGORIES.every((c) => w[c] === 0)) throw new ConfigError('at least one category weight must be positive', { field: 'categoryWeights', found: w });
    const b = this.config.backgroundWeights;
    if (BACKGROUND_PATTERNS.every((p) => b[p] === 0)) throw new ConfigError('at least one background weight must be positive', { field: 'backgroundWeights', found: b });
    const sw = this.config.sizeWeights;
    if (SIZES.every((k) => sw[k] === 0)) throw new ConfigError('at least one size weight must be positive', { field: 'sizeWeights', found: sw });
  }

  /** Caption and attributes of sample `index` of `split` (cheap: no rendering). */
  prompt(split: SyntheticSplit, index: number): SyntheticPrompt {
    const { seed, imageSize, categoryWeights, backgroundWeights, sizeWeights, validationFraction } = this.config;
    if (!Number.isInteger(index) || index < 0) throw new ConfigError('sample index must be a non-negative integer', { field: 'index', found: index });
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const s = sampleScene(Rng.forKey(seed, 'synthetic', index, attempt), imageSize, categoryWeights, backgroundWeights, sizeWeights);
      if (splitOfPrompt(s.caption, validationFraction) === split) return { id: `synthetic/${split}/${index}`, ...s };
    }
    throw new ConfigError('no prompt of this split found; validationFraction too extreme', { field: 'validationFraction', found: validationFraction });
  }

  sample(split: SyntheticSplit, index: number): SyntheticSample {
    const p = this.prompt(split, index);
    return { ...p, image: renderScene(p.attributes) };
  }

  /** An indexed source over `numSamples` samples of `split`. */
  source(split: SyntheticSplit = this.config.split, numSamples = this.config.numSamples): IndexedSource<SyntheticAttributes> {
    const name = `synthetic/${split}`;
    return {
      kind: 'indexed',
      name,
      length: numSamples,
      info: () => ({ format: 'synthetic', rows: numSamples, notes: {} }),
      get: async (index: number): Promise<SourceRow<SyntheticAttributes>> => {
        const s = this.sample(split, index);
        return { id: s.id, caption: s.caption, image: { kind: 'pixels', image: s.image, name: s.id }, attributes: s.attributes };
      },
    };
  }
}

export async function openSynthetic(config: SyntheticConfig): Promise<IndexedSource<SyntheticAttributes>> {
  const world = new SyntheticWorld(config);
  return world.source();
}
