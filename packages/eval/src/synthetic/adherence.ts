import { InputError, Rng } from '@aptp/core';
import { CATEGORIES, type AttributeName, type PromptCategory, type RgbImage, type SyntheticAttributes } from '@aptp/datasets';
import { HEAD_NAMES, attributeTargets, type AttributePrediction, type HeadName, type SyntheticAttributeClassifier } from './classifier';

/**
 * Prompt adherence on the synthetic world: does a generated image show what its prompt asked for? The classifier's
 * predicted attributes are compared with the prompt's ground truth, on the attributes the caption states
 * (`attributes.mentioned`) plus the scene category:
 *
 * | stated     | heads checked                                                         |
 * |------------|-----------------------------------------------------------------------|
 * | (always)   | category                                                              |
 * | shape      | shape (+ secondShape for relations)                                   |
 * | color      | color (+ secondColor for relations)                                   |
 * | size       | size                                                                  |
 * | position   | position                                                              |
 * | count      | count                                                                 |
 * | relation   | relationAxis; the order is in which object is first (left/upper)      |
 * | text       | glyph, secondGlyph                                                    |
 * | background | backgroundPattern, backgroundColor                                    |
 *
 * An image adheres when every checked head matches. A relation drawn the wrong way round ("a blue square left of a
 * red circle" for "a red circle left of a blue square") fails through the first/second object heads.
 */
export type AdherenceAttribute = AttributeName | 'category';

const HEADS_OF: Record<AdherenceAttribute, readonly HeadName[]> = {
  category: ['category'],
  shape: ['shape', 'secondShape'],
  color: ['color', 'secondColor'],
  size: ['size'],
  position: ['position'],
  count: ['count'],
  relation: ['relationAxis'],
  text: ['glyph', 'secondGlyph'],
  background: ['backgroundPattern', 'backgroundColor'],
};

/** The (attribute, head, expected label) checks a prompt implies. */
export function promptChecks(prompt: SyntheticAttributes): { attribute: AdherenceAttribute; head: HeadName; expected: string }[] {
  const truth = attributeTargets(prompt);
  const attributes: AdherenceAttribute[] = ['category', ...prompt.mentioned];
  const checks: { attribute: AdherenceAttribute; head: HeadName; expected: string }[] = [];
  for (const attribute of attributes) {
    for (const head of HEADS_OF[attribute]) {
      const expected = truth[head];
      if (expected !== undefined) checks.push({ attribute, head, expected });
    }
  }
  return checks;
}

export interface Ratio {
  hits: number;
  total: number;
  /** hits / total (NaN when total is 0). */
  ratio: number;
}

const ratio = (hits: number, total: number): Ratio => ({ hits, total, ratio: total > 0 ? hits / total : Number.NaN });

export interface AdherenceResult {
  /** Images whose checked attributes all match their prompt. */
  overall: Ratio;
  /** The same per prompt category (shape, count, relation, text). */
  perCategory: Record<PromptCategory, Ratio>;
  /** Per stated attribute: images whose heads for this attribute match, among prompts that state it. */
  perAttribute: Partial<Record<AdherenceAttribute, Ratio>>;
  /** Per image: adheres or not. */
  perImage: boolean[];
}

function checkLengths(predictions: readonly AttributePrediction[], prompts: readonly unknown[], what: string): void {
  if (predictions.length !== prompts.length) {
    throw new InputError(`one entry of ${what} per prediction`, { code: 'E_LENGTH', field: what, expected: predictions.length, found: prompts.length });
  }
}

/**
 * Prompt adherence of generated images (classified into `predictions`) with the prompts they were generated from.
 * Group the inputs yourself for per-expert numbers (e.g. call once per expert).
 */
export function promptAdherence(predictions: readonly AttributePrediction[], prompts: readonly SyntheticAttributes[]): AdherenceResult {
  checkLengths(predictions, prompts, 'prompts');
  const perCategory = Object.fromEntries(CATEGORIES.map((c) => [c, { hits: 0, total: 0 }])) as Record<PromptCategory, { hits: number; total: number }>;
  const perAttribute: Partial<Record<AdherenceAttribute, { hits: number; total: number }>> = {};
  const perImage: boolean[] = [];
  prompts.forEach((prompt, i) => {
    const labels = predictions[i]!.labels;
    const byAttribute = new Map<AdherenceAttribute, boolean>();
    for (const { attribute, head, expected } of promptChecks(prompt)) {
      byAttribute.set(attribute, (byAttribute.get(attribute) ?? true) && labels[head] === expected);
    }
    let ok = true;
    for (const [attribute, good] of byAttribute) {
      const acc = (perAttribute[attribute] ??= { hits: 0, total: 0 });
      acc.total += 1;
      if (good) acc.hits += 1;
      ok &&= good;
    }
    perImage.push(ok);
    const cat = perCategory[prompt.category];
    cat.total += 1;
    if (ok) cat.hits += 1;
  });
  const hits = perImage.filter(Boolean).length;
  return {
    overall: ratio(hits, perImage.length),
    perCategory: Object.fromEntries(CATEGORIES.map((c) => [c, ratio(perCategory[c].hits, perCategory[c].total)])) as Record<PromptCategory, Ratio>,
    perAttribute: Object.fromEntries(Object.entries(perAttribute).map(([k, v]) => [k, ratio(v!.hits, v!.total)])) as Partial<Record<AdherenceAttribute, Ratio>>,
    perImage,
  };
}

/**
 * Classifier accuracy per head on real samples with known attributes: among the samples a head applies to (see
 * `attributeTargets`), the share predicted right.
 */
export function headAccuracy(predictions: readonly AttributePrediction[], truths: readonly SyntheticAttributes[]): Record<HeadName, Ratio> {
  checkLengths(predictions, truths, 'truths');
  const acc = Object.fromEntries(HEAD_NAMES.map((h) => [h, { hits: 0, total: 0 }])) as Record<HeadName, { hits: number; total: number }>;
  truths.forEach((a, i) => {
    const t = attributeTargets(a);
    for (const h of HEAD_NAMES) {
      if (t[h] === undefined) continue;
      acc[h].total += 1;
      if (predictions[i]!.labels[h] === t[h]) acc[h].hits += 1;
    }
  });
  return Object.fromEntries(HEAD_NAMES.map((h) => [h, ratio(acc[h].hits, acc[h].total)])) as Record<HeadName, Ratio>;
}

/**
 * A derangement of 0..n−1 (no index maps to itself) from `rng`: a random permutation p, then image p[i] gets the
 * prompt of p[i+1] (cyclically). Used to pair images with someone else's prompt.
 */
export function derangement(n: number, rng: Rng): number[] {
  const p = rng.permutation(n);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) out[p[i]!] = p[(i + 1) % n]!;
  return out;
}

export interface ClassifierValidation {
  /** Per-head accuracy on the samples (see {@link headAccuracy}). */
  headAccuracy: Record<HeadName, Ratio>;
  /** Adherence of the real images with their own prompts (should be high). */
  adherence: AdherenceResult;
  /** Adherence of the real images with other samples' prompts (a derangement; should be low). */
  shuffledAdherence: AdherenceResult;
}

/**
 * Validates a classifier on real synthetic samples with known attributes (held-out prompts): per-head accuracy,
 * adherence with the true prompts and with shuffled prompts (derangement from `Rng.forKey(seed, 'shuffle')`).
 */
export async function validateClassifier(
  classifier: SyntheticAttributeClassifier,
  samples: readonly { image: RgbImage; attributes: SyntheticAttributes }[],
  options: { seed?: number; batchSize?: number } = {},
): Promise<ClassifierValidation> {
  if (samples.length < 2) throw new InputError('validation needs at least 2 samples', { field: 'samples', found: samples.length });
  const { predictions } = await classifier.predict(samples.map((s) => s.image), { batchSize: options.batchSize });
  const truths = samples.map((s) => s.attributes);
  const perm = derangement(samples.length, Rng.forKey(options.seed ?? 0, 'shuffle'));
  return {
    headAccuracy: headAccuracy(predictions, truths),
    adherence: promptAdherence(predictions, truths),
    shuffledAdherence: promptAdherence(predictions, perm.map((j) => truths[j]!)),
  };
}
