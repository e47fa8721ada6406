import { InputError, Rng } from '@aptp/core';
import { SyntheticWorld, type SyntheticAttributes } from '@aptp/datasets';
import { HEAD_NAMES, attributeTargets, syntheticHeadClasses, type AttributePrediction, type HeadName } from './classifier';
import { derangement, headAccuracy, promptAdherence, promptChecks } from './adherence';

const world = new SyntheticWorld({ seed: 21 });
const prompts: SyntheticAttributes[] = Array.from({ length: 400 }, (_, i) => world.prompt('validation', i).attributes);
const heads = syntheticHeadClasses();

/** What a perfect classifier would say about the image drawn for `a` (heads that do not apply: first class). */
function oracle(a: SyntheticAttributes): AttributePrediction {
  const t = attributeTargets(a);
  const labels = {} as Record<HeadName, string>;
  const confidence = {} as Record<HeadName, number>;
  for (const h of HEAD_NAMES) {
    labels[h] = t[h] ?? heads[h][0]!;
    confidence[h] = 1;
  }
  return { labels, confidence };
}

/** Another class of the same head. */
function other(h: HeadName, label: string): string {
  const cls = heads[h];
  return cls[(cls.indexOf(label) + 1) % cls.length]!;
}

const find = (f: (a: SyntheticAttributes) => boolean): SyntheticAttributes => {
  const a = prompts.find(f);
  if (!a) throw new Error('no such prompt in the fixture');
  return a;
};

describe('prompt adherence', () => {
  it('a perfect classifier adheres to every prompt; the report is per category and per attribute', () => {
    const r = promptAdherence(prompts.map(oracle), prompts);
    expect(r.overall).toEqual({ hits: 400, total: 400, ratio: 1 });
    for (const c of ['shape', 'count', 'relation', 'text'] as const) {
      const n = prompts.filter((p) => p.category === c).length;
      expect(n).toBeGreaterThan(30);
      expect(r.perCategory[c]).toEqual({ hits: n, total: n, ratio: 1 });
    }
    expect(r.perAttribute.category!.total).toBe(400);
    expect(r.perAttribute.size!.total).toBe(prompts.filter((p) => p.mentioned.includes('size')).length);
    expect(r.perAttribute.background!.total).toBe(prompts.filter((p) => p.mentioned.includes('background')).length);
  });

  it('a wrong stated attribute fails the image, a wrong unstated one does not', () => {
    const noSize = find((a) => a.category === 'shape' && !a.mentioned.includes('size'));
    const withSize = find((a) => a.category === 'shape' && a.mentioned.includes('size'));
    const plainBg = find((a) => !a.mentioned.includes('background'));
    const cases: [SyntheticAttributes, HeadName, boolean][] = [
      [noSize, 'size', true],
      [withSize, 'size', false],
      [noSize, 'color', false],
      [noSize, 'category', false],
      [plainBg, 'backgroundColor', true],
      [find((a) => a.mentioned.includes('background')), 'backgroundPattern', false],
      [find((a) => a.category === 'count'), 'count', false],
      [find((a) => a.category === 'count'), 'position', true],
      [find((a) => a.category === 'text' && a.text!.length === 1), 'secondGlyph', false],
      [find((a) => a.category === 'relation'), 'relationAxis', false],
      [find((a) => a.category === 'relation'), 'secondColor', false],
    ];
    for (const [a, head, stillAdheres] of cases) {
      const p = oracle(a);
      p.labels[head] = other(head, p.labels[head]);
      const r = promptAdherence([p], [a]);
      expect({ head, category: a.category, adheres: r.perImage[0] }).toEqual({ head, category: a.category, adheres: stillAdheres });
    }
  });

  it('a relation drawn the wrong way round fails', () => {
    const a = find((x) => x.category === 'relation' && (x.objects[0]!.kind !== x.objects[1]!.kind || x.objects[0]!.color !== x.objects[1]!.color));
    const p = oracle(a);
    [p.labels.shape, p.labels.secondShape] = [p.labels.secondShape, p.labels.shape];
    [p.labels.color, p.labels.secondColor] = [p.labels.secondColor, p.labels.color];
    const r = promptAdherence([p], [a]);
    expect(r.perImage[0]).toBe(false);
    expect(r.perAttribute.relation!.ratio).toBe(1); // the axis is right; the order lives in the object heads
    expect(promptChecks(a).map((c) => c.head).sort()).toEqual(['category', 'color', 'relationAxis', 'secondColor', 'secondShape', 'shape', ...(a.mentioned.includes('background') ? ['backgroundColor', 'backgroundPattern'] : [])].sort());
  });

  it('images paired with shuffled prompts rarely adhere', () => {
    const perm = derangement(prompts.length, Rng.forKey(1, 'shuffle'));
    const r = promptAdherence(prompts.map(oracle), perm.map((j) => prompts[j]!));
    expect(r.overall.ratio).toBeLessThan(0.05);
  });

  it('head accuracy counts only the samples a head applies to', () => {
    const preds = prompts.map(oracle);
    const text = prompts.map((a, i) => (a.category === 'text' ? i : -1)).filter((i) => i >= 0);
    for (const i of text.slice(0, 5)) preds[i]!.labels.glyph = other('glyph', preds[i]!.labels.glyph);
    const acc = headAccuracy(preds, prompts);
    expect(acc.glyph).toEqual({ hits: text.length - 5, total: text.length, ratio: (text.length - 5) / text.length });
    expect(acc.size.total).toBe(prompts.filter((p) => p.category === 'shape').length);
    expect(acc.category.ratio).toBe(1);
    expect(() => headAccuracy(preds.slice(1), prompts)).toThrow(InputError);
    expect(() => promptAdherence(preds, prompts.slice(1))).toThrow(/prompts: one entry of prompts per prediction: expected 400, found 399/);
  });

  it('derangements are permutations without fixed points', () => {
    for (const n of [2, 3, 10, 101]) {
      const d = derangement(n, Rng.forKey(n));
      expect([...d].sort((a, b) => a - b)).toEqual(Array.from({ length: n }, (_, i) => i));
      expect(d.every((v, i) => v !== i)).toBe(true);
    }
  });
});
