import type { Rng } from '@aptp/core';

/**
 * The synthetic world's vocabulary and caption grammar. Prompts come in four categories of increasing difficulty
 * (APTP's finding that some prompts need more capacity, §8.5: text rendering went to the largest expert):
 * - `shape`: one shape with color, size, position (some left unsaid);
 * - `count`: two to five copies of a small shape ("three green dots");
 * - `relation`: two shapes and a spatial relation ("a red circle left of a blue square");
 * - `text`: one or two letters/digits in the built-in bitmap font ("the letter K in yellow").
 * Any category may add a colored or textured background. Synonyms and several templates per category keep prompts
 * from being one fixed template. The attributes say exactly what was drawn and which parts the caption states.
 */
export const SHAPES = ['circle', 'square', 'triangle', 'diamond', 'cross', 'ring', 'star'] as const;
export type ShapeName = (typeof SHAPES)[number];

/** Shapes simple enough to stay recognisable when drawn small and several times (count prompts). */
export const COUNT_SHAPES = ['circle', 'square', 'triangle', 'diamond'] as const;

export const COLORS = {
  red: [220, 30, 30],
  green: [30, 170, 50],
  blue: [30, 70, 220],
  yellow: [240, 220, 30],
  orange: [245, 140, 20],
  purple: [140, 50, 190],
  pink: [245, 120, 190],
  cyan: [40, 210, 220],
  white: [245, 245, 245],
  black: [15, 15, 15],
  gray: [128, 128, 128],
  brown: [130, 80, 35],
} as const satisfies Record<string, readonly [number, number, number]>;
export type ColorName = keyof typeof COLORS;
export const COLOR_NAMES = Object.keys(COLORS) as ColorName[];

export const SIZES = ['small', 'medium', 'large'] as const;
export type SizeName = (typeof SIZES)[number];

/** 3×3 grid cells, row-major from the top left. */
export const POSITIONS = ['top left', 'top', 'top right', 'left', 'center', 'right', 'bottom left', 'bottom', 'bottom right'] as const;
export type PositionName = (typeof POSITIONS)[number];

export const RELATIONS = ['left of', 'right of', 'above', 'below'] as const;
export type RelationName = (typeof RELATIONS)[number];

export const BACKGROUND_PATTERNS = ['plain', 'stripes', 'checker', 'gradient', 'noise'] as const;
export type BackgroundPattern = (typeof BACKGROUND_PATTERNS)[number];

export const CATEGORIES = ['shape', 'count', 'relation', 'text'] as const;
export type PromptCategory = (typeof CATEGORIES)[number];

/** What a caption may state; `mentioned` lists those it does. */
export type AttributeName = 'shape' | 'color' | 'size' | 'position' | 'background' | 'relation' | 'count' | 'text';

export interface SceneObject {
  /** A shape, or 'glyph' for a rendered character. */
  kind: ShapeName | 'glyph';
  color: ColorName;
  size: SizeName;
  /** Grid cell of the center. */
  position: PositionName;
  /** Center in pixels (x right, y down; pixel (i, j) covers [i, i+1) × [j, j+1)). */
  center: [number, number];
  /** Shapes: outer radius in pixels. Glyphs: half the glyph height. */
  radius: number;
  /** Glyph objects: the character. */
  glyph?: string;
  /** Glyph objects: the box [x0, y0, x1, y1] in pixels the 5×7 bitmap is stretched over. */
  box?: [number, number, number, number];
}

export interface SceneBackground {
  pattern: BackgroundPattern;
  color: ColorName;
  /** stripes: horizontal | vertical | diagonal; gradient: horizontal | vertical. */
  orientation?: 'horizontal' | 'vertical' | 'diagonal';
  /** noise: the seed of the per-pixel noise. */
  noiseSeed?: number;
}

/** Ground truth of one synthetic sample (what an evaluator checks prompt adherence against). */
export interface SyntheticAttributes {
  category: PromptCategory;
  /** Image side in pixels the coordinates refer to. */
  imageSize: number;
  objects: SceneObject[];
  background: SceneBackground;
  /** relation prompts: objects[0] <relation> objects[1]. */
  relation?: RelationName;
  /** count prompts: objects.length. */
  count?: number;
  /** text prompts: the characters drawn, left to right. */
  text?: string;
  /** Attributes the caption states (unstated ones were drawn at random or left at their default). */
  mentioned: AttributeName[];
  /** Template id, for analysis. */
  template: string;
}

/** Synonyms: the first entry is the canonical word. */
const SHAPE_WORDS: Record<ShapeName, string[]> = {
  circle: ['circle', 'disc', 'round disk'],
  square: ['square', 'box'],
  triangle: ['triangle'],
  diamond: ['diamond', 'rhombus'],
  cross: ['cross', 'plus sign'],
  ring: ['ring', 'hollow circle', 'donut'],
  star: ['star', 'five-pointed star'],
};
const SHAPE_PLURALS: Record<(typeof COUNT_SHAPES)[number], string[]> = {
  circle: ['dots', 'circles', 'discs', 'spots'],
  square: ['squares', 'boxes'],
  triangle: ['triangles'],
  diamond: ['diamonds', 'rhombi'],
};
const COLOR_WORDS: Record<ColorName, string[]> = {
  red: ['red'],
  green: ['green'],
  blue: ['blue'],
  yellow: ['yellow'],
  orange: ['orange'],
  purple: ['purple', 'violet'],
  pink: ['pink'],
  cyan: ['cyan', 'aqua'],
  white: ['white'],
  black: ['black'],
  gray: ['gray', 'grey'],
  brown: ['brown'],
};
const SIZE_WORDS: Record<SizeName, string[]> = {
  small: ['small', 'tiny', 'little'],
  medium: ['medium', 'medium-sized', 'mid-sized'],
  large: ['large', 'big', 'huge'],
};
const COUNT_WORDS: Record<number, string[]> = {
  2: ['two', '2', 'a pair of'],
  3: ['three', '3'],
  4: ['four', '4'],
  5: ['five', '5'],
};
const RELATION_WORDS: Record<RelationName, string[]> = {
  'left of': ['left of', 'to the left of', 'on the left of'],
  'right of': ['right of', 'to the right of', 'on the right of'],
  above: ['above', 'over', 'higher than'],
  below: ['below', 'under', 'beneath'],
};
/** "B with A <it>": the phrase placing the second object relative to the first. */
const RELATION_IT: Record<RelationName, string[]> = {
  'left of': ['to its right', 'on its right'],
  'right of': ['to its left', 'on its left'],
  above: ['below it', 'underneath it'],
  below: ['above it', 'over it'],
};
export const INVERSE_RELATION: Record<RelationName, RelationName> = { 'left of': 'right of', 'right of': 'left of', above: 'below', below: 'above' };

function positionPhrases(p: PositionName): string[] {
  if (p === 'center') return ['in the center', 'in the middle', 'at the center', 'in the centre'];
  const parts = p.split(' ');
  if (parts.length === 2) {
    const [v, h] = parts as [string, string];
    const vv = v === 'top' ? ['top', 'upper'] : ['bottom', 'lower'];
    return vv.flatMap((w) => [`in the ${w} ${h} corner`, `at the ${w} ${h}`, `near the ${w} ${h} corner`]);
  }
  const edge = parts[0]!;
  if (edge === 'top' || edge === 'bottom') return [`at the ${edge}`, `near the ${edge} edge`, `at the ${edge} center`, `in the ${edge} middle`];
  return [`on the ${edge}`, `at the ${edge} side`, `near the ${edge} edge`, `in the middle ${edge}`];
}

function backgroundPhrases(b: SceneBackground, color: string): string[] {
  switch (b.pattern) {
    case 'plain':
      return [`on a ${color} background`, `against a ${color} background`, `on ${color}`, `with a ${color} backdrop`];
    case 'stripes':
      return [`on a ${color} striped background`, `over ${color} stripes`, `on ${b.orientation} ${color} stripes`];
    case 'checker':
      return [`on a ${color} checkerboard`, `on a ${color} checkered background`, `over a ${color} checker pattern`];
    case 'gradient':
      return [`on a ${color} gradient`, `against a ${color} gradient background`, `on a ${b.orientation} ${color} gradient`];
    case 'noise':
      return [`on a noisy ${color} background`, `on a grainy ${color} background`, `over ${color} noise`];
  }
}

const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[rng.nextInt(xs.length)]!;

/** "a orange" → "an orange" (also after the start of the caption). */
export function fixArticles(s: string): string {
  return s.replace(/\b([Aa]) (?=[aeiouAEIOU8]|11\b|18\b)/g, '$1n ');
}

function tidy(s: string): string {
  return fixArticles(s.replace(/\s+/g, ' ').replace(/ ,/g, ',').trim());
}

function objectPhrase(rng: Rng, o: SceneObject, size: boolean): string {
  const color = pick(rng, COLOR_WORDS[o.color]);
  const shape = pick(rng, SHAPE_WORDS[o.kind as ShapeName]);
  return size ? `a ${pick(rng, SIZE_WORDS[o.size])} ${color} ${shape}` : `a ${color} ${shape}`;
}

/**
 * The caption for a scene, with its template id. The scene's `mentioned` list decides what is said; `rng` picks
 * synonyms and template. The canonical phrasing of each attribute is the first synonym.
 */
export function captionFor(a: SyntheticAttributes, rng: Rng): { caption: string; template: string } {
  const says = (k: AttributeName): boolean => a.mentioned.includes(k);
  const bg = says('background') ? backgroundPhrases(a.background, pick(rng, COLOR_WORDS[a.background.color])) : [''];
  const bgPhrase = pick(rng, bg);
  const withBg = (s: string): string => (bgPhrase ? `${s} ${bgPhrase}` : s);
  switch (a.category) {
    case 'shape': {
      const o = a.objects[0]!;
      const pos = says('position') ? pick(rng, positionPhrases(o.position)) : '';
      const size = says('size') ? pick(rng, SIZE_WORDS[o.size]) : '';
      const color = pick(rng, COLOR_WORDS[o.color]);
      const shape = pick(rng, SHAPE_WORDS[o.kind as ShapeName]);
      const t = rng.nextInt(6);
      const caption = [
        () => `a ${size} ${color} ${shape} ${pos}`,
        () => (pos ? `${pos}, a ${size} ${color} ${shape}` : `a ${size} ${color} ${shape}`),
        () => `there is a ${size} ${color} ${shape} ${pos}`,
        () => `an image of a ${size} ${color} ${shape} ${pos}`,
        () => `a ${size} ${shape} colored ${color} ${pos}`,
        () => `${color} ${shape}${size ? `, ${size}` : ''}${pos ? `, ${pos}` : ''}`,
      ][t]!();
      return { caption: tidy(withBg(caption)), template: `shape.${t}` };
    }
    case 'count': {
      const o = a.objects[0]!;
      const n = pick(rng, COUNT_WORDS[a.count!]!);
      const color = pick(rng, COLOR_WORDS[o.color]);
      const plural = pick(rng, SHAPE_PLURALS[o.kind as (typeof COUNT_SHAPES)[number]]);
      const small = rng.nextDouble() < 0.5 ? pick(rng, SIZE_WORDS.small) : '';
      const t = rng.nextInt(5);
      const num = n.replace(/^a pair of$/, 'two');
      const caption = [
        () => `${n} ${small} ${color} ${plural}`,
        () => `${n} ${small} ${plural}, all ${color}`,
        () => `a group of ${num} ${small} ${color} ${plural}`,
        () => `there are ${num} ${small} ${color} ${plural}`,
        () => `exactly ${num} ${small} ${color} ${plural}`,
      ][t]!();
      return { caption: tidy(withBg(caption)), template: `count.${t}` };
    }
    case 'relation': {
      const [first, second] = a.objects as [SceneObject, SceneObject];
      const rel = a.relation!;
      const t = rng.nextInt(4);
      let caption: string;
      if (t === 0) caption = `${objectPhrase(rng, first, false)} ${pick(rng, RELATION_WORDS[rel])} ${objectPhrase(rng, second, false)}`;
      else if (t === 1) caption = `${objectPhrase(rng, second, false)} ${pick(rng, RELATION_WORDS[INVERSE_RELATION[rel]])} ${objectPhrase(rng, first, false)}`;
      else if (t === 2) caption = `${objectPhrase(rng, first, false)} with ${objectPhrase(rng, second, false)} ${pick(rng, RELATION_IT[rel])}`;
      else caption = `there is ${objectPhrase(rng, first, false)} ${pick(rng, RELATION_WORDS[rel])} ${objectPhrase(rng, second, false)}`;
      return { caption: tidy(withBg(caption)), template: `relation.${t}` };
    }
    case 'text': {
      const color = pick(rng, COLOR_WORDS[a.objects[0]!.color]);
      const text = a.text!;
      let caption: string;
      let t: number;
      if (text.length === 1) {
        const isDigit = /[0-9]/.test(text);
        const noun = isDigit ? pick(rng, ['digit', 'number', 'numeral']) : pick(rng, ['letter', 'character']);
        const written = pick(rng, ['in', 'written in', 'drawn in', 'painted in', 'colored', 'rendered in']);
        t = rng.nextInt(5);
        caption = [
          () => `the ${noun} ${text} ${written} ${color}`,
          () => `a ${color} ${noun} ${text}`,
          () => `a ${noun} ${text} ${written} ${color}`,
          () => `a ${color} ${text}`,
          () => `${color} ${noun} ${text}`,
        ][t]!();
      } else {
        const word = pick(rng, ['text', 'word', 'letters', 'characters']);
        t = 5 + rng.nextInt(4);
        caption = [() => `the ${word} "${text}" in ${color}`, () => `the ${word} "${text}" written in ${color}`, () => `"${text}" in ${color} letters`, () => `${color} ${word} reading "${text}"`][t - 5]!();
      }
      return { caption: tidy(withBg(caption)), template: `text.${t}` };
    }
  }
}
