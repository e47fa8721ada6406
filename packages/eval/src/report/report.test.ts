import * as os from 'node:os';
import * as path from 'node:path';
import fc from 'fast-check';
import { InputError } from '@aptp/core';
import { SyntheticWorld } from '@aptp/datasets';
import { promptAdherence } from '../synthetic/adherence';
import { attributeTargets, type HeadName, type SyntheticDistances } from '../synthetic/classifier';
import { buildReport, codeUsageStats, formatMacs, formatNumber, formatRatio, type ReportInput } from './report';
import { makeSampleRun } from './testFixtures';
import { fisherExactTest, permutationTest } from '../metrics/significance';

const clone = <T>(x: T): T => structuredClone(x);

describe('buildReport', () => {
  let input: ReportInput;
  beforeAll(async () => {
    input = await makeSampleRun(path.join(os.tmpdir(), 'unused'), { writeImages: false });
  });

  test('derived tables follow the rows and experts (computed independently here)', () => {
    const r = buildReport(input);
    const experts = input.experts;
    const rows = input.prompts;
    // Per category: mean of the routed experts' MACs, prompts per expert.
    const cats = [...new Set(rows.map((p) => p.category))].sort();
    expect(r.categories.map((c) => c.name)).toEqual(cats);
    for (const c of r.categories) {
      const inCat = rows.filter((p) => p.category === c.name);
      const mean = inCat.reduce((s, p) => s + experts.find((e) => e.id === p.expert)!.macs, 0) / inCat.length;
      expect(c.prompts).toBe(inCat.length);
      expect(Math.abs(c.meanMacs - mean)).toBeLessThanOrEqual(1e-12 * mean);
      expect(c.expertCounts).toEqual(experts.map((e) => inCat.filter((p) => p.expert === e.id).length));
      const known = inCat.filter((p) => p.adheres !== null && p.adheres !== undefined);
      expect(c.adherence).toEqual({ hits: known.filter((p) => p.adheres).length, total: known.length, ratio: known.filter((p) => p.adheres).length / known.length });
    }
    // Routed average over all prompts and shares.
    const total = experts.reduce((s, e) => s + e.promptsRouted, 0);
    const routedMean = experts.reduce((s, e) => s + e.promptsRouted * e.macs, 0) / total;
    expect(r.summary.promptsRouted).toBe(total);
    expect(Math.abs(r.summary.meanMacsRouted - routedMean)).toBeLessThanOrEqual(1e-12 * routedMean);
    expect(r.experts.reduce((s, e) => s + e.routedShare, 0)).toBeCloseTo(1, 12);
    expect(r.prompts.map((p) => p.macs)).toEqual(rows.map((p) => experts.find((e) => e.id === p.expert)!.macs));
    // Variants: defaults and ratio to the teacher.
    const teacher = r.variants.find((v) => v.kind === 'teacher')!;
    const aptp = r.variants.find((v) => v.kind === 'aptp')!;
    expect(aptp.meanMacs).toBe(r.summary.meanMacsRouted);
    expect(r.summary.teacherMacs).toBe(teacher.meanMacs);
    for (const v of r.variants) expect(v.macsRatioToTeacher).toBe(v.meanMacs / teacher.meanMacs);
    expect(r.variants.find((v) => v.id === 'expert-2')!.meanMacs).toBe(experts[2]!.macs);
    expect(aptp.adherence!.overall).toEqual({ hits: 17, total: 24, ratio: 17 / 24 });
    expect(r.variants.find((v) => v.id === 'random')!.adherence!.overall).toEqual({ ratio: 0.3, hits: null, total: null });
    // Latency statistics over rows.
    const lat = rows.map((p) => p.latencyMs!);
    expect(r.summary.latency!.meanMs).toBeCloseTo(lat.reduce((a, b) => a + b, 0) / lat.length, 12);
    // JSON round trip keeps everything (no NaN / Infinity / typed arrays).
    expect(JSON.parse(JSON.stringify(r))).toEqual(r);
  });

  test('an AdherenceResult with total 0 (ratio NaN) is accepted; its ratio becomes null', () => {
    const x = clone(input);
    x.variants![0]!.adherence = { overall: { hits: 0, total: 0, ratio: Number.NaN }, perCategory: { text: { hits: 0, total: 0, ratio: Number.NaN } }, perImage: [] };
    const r = buildReport(x);
    expect(r.variants[0]!.adherence!.overall).toEqual({ hits: 0, total: 0, ratio: null });
    expect(formatRatio(r.variants[0]!.adherence!.overall)).toBe('– (0/0)');
  });

  test("the synthetic evaluator's outputs are accepted as plain data (AdherenceResult, SyntheticDistances)", () => {
    const world = new SyntheticWorld({ seed: 3, split: 'validation' });
    const truths = Array.from({ length: 12 }, (_, i) => world.prompt('validation', i).attributes);
    // Predictions equal to the truth except for every third image (its category head is wrong).
    const predictions = truths.map((t, i) => {
      const labels = attributeTargets(t) as Record<HeadName, string>;
      return { labels: { ...labels, category: i % 3 === 0 ? 'none' : labels.category }, confidence: {} as Record<HeadName, number> };
    });
    const adherence = promptAdherence(predictions, truths);
    const distances: SyntheticDistances = { fid: 3.25, cmmd: 0.125 };
    const x = clone(input);
    x.variants![0] = { id: 'aptp', kind: 'aptp', ...distances, adherence };
    const v = buildReport(x).variants[0]!;
    expect(v).toMatchObject({ fid: 3.25, cmmd: 0.125 });
    expect(v.adherence!.overall).toEqual({ hits: 8, total: 12, ratio: 8 / 12 });
    for (const [c, r] of Object.entries(adherence.perCategory)) {
      expect(v.adherence!.perCategory[c]).toEqual({ hits: r.hits, total: r.total, ratio: r.total > 0 ? r.hits / r.total : null });
    }
    expect(Object.keys(v.adherence!.perAttribute).sort()).toEqual(Object.keys(adherence.perAttribute).sort());
  });

  test('schema and consistency errors are InputErrors naming the field', () => {
    const cases: [string, (x: ReportInput) => void, RegExp][] = [
      ['missing backend', (x) => delete (x.run as { backend?: string }).backend, /^run\.backend: /],
      ['bad date', (x) => (x.run.startedAt = 'yesterday'), /^run\.startedAt: expected an ISO date/],
      ['unknown key', (x) => ((x.variants![1] as Record<string, unknown>).fidd = 3), /^variants\[1\]\.fidd: unknown key/],
      ['negative MACs', (x) => (x.experts[2]!.macs = -1), /^experts\[2\]\.macs: /],
      ['ratio > 1', (x) => (x.experts[0]!.macsRatio = 1.5), /^experts\[0\]\.macsRatio: /],
      ['absolute image path', (x) => (x.prompts[3]!.image = '/etc/passwd'), /^prompts\[3\]\.image: expected a path relative to the run folder/],
      ['escaping image path', (x) => (x.prompts[3]!.image = 'samples/../../x.png'), /^prompts\[3\]\.image: /],
      ['URL image', (x) => (x.prompts[3]!.image = 'https://example.com/a.png'), /^prompts\[3\]\.image: /],
      ['unknown expert', (x) => (x.prompts[5]!.expert = 99), /^prompts\[5\]\.expert: unknown expert id: expected \[0,1,2,3\], found 99/],
      ['MACs differ from the expert', (x) => (x.prompts[2]!.macs = 1), /^prompts\[2\]\.macs: MACs differ from the routed expert/],
      ['duplicate expert', (x) => (x.experts[1]!.id = 0), /^experts\[1\]\.id: duplicate expert id/],
      ['duplicate variant', (x) => (x.variants![2]!.id = 'aptp'), /^variants\[2\]\.id: duplicate variant id/],
      ['baseline without MACs', (x) => delete x.variants![5]!.meanMacs, /^variants\[5\]\.meanMacs: required for kind singleArchitecture/],
      ['hits > total', (x) => (x.variants![0]!.adherence = { overall: { hits: 5, total: 4 } }), /^variants\[0\]\.adherence\.overall\.hits: hits must not exceed total/],
      ['adherence > 1', (x) => (x.variants![7]!.adherence = { overall: 1.2 }), /^variants\[7\]\.adherence\.overall: /],
      ['bad kind', (x) => ((x.variants![0] as { kind: string }).kind = 'magic'), /^variants\[0\]\.kind: /],
      ['code usage counts', (x) => (x.codeUsage = { withOt: [1, -2] }), /^codeUsage\.withOt\[1\]: /],
      ['no experts', (x) => (x.experts = []), /^experts: /],
    ];
    for (const [name, mutate, message] of cases) {
      const x = clone(input);
      mutate(x);
      let err: unknown;
      try {
        buildReport(x, { file: undefined });
      } catch (e) {
        err = e;
      }
      expect({ name, isInputError: err instanceof InputError }).toEqual({ name, isInputError: true });
      expect({ name, message: (err as Error).message }).toEqual({ name, message: expect.stringMatching(message) });
    }
    expect(() => buildReport(input, { file: 'runs/x/eval.json' })).not.toThrow();
    const x = clone(input);
    x.run.backend = '';
    expect(() => buildReport(x, { file: 'runs/x/eval.json' })).toThrow(/^runs\/x\/eval\.json: run\.backend: /);
  });

  test('claims: statuses come from the numbers, with the compared values shown', () => {
    const r = buildReport(input);
    const claim = (id: string) => {
      const c = r.claims.find((k) => k.id === id);
      if (!c) throw new Error(`no claim ${id}: ${r.claims.map((k) => k.id).join(', ')}`);
      return c;
    };
    // Single-architecture: APTP mean MACs vs 0.62·teacher — the tolerance decides whether it is tested at all.
    const aptp = r.variants.find((v) => v.kind === 'aptp')!;
    const single = r.variants.find((v) => v.kind === 'singleArchitecture')!;
    const rel = Math.abs(aptp.meanMacs - single.meanMacs) / single.meanMacs;
    const fidSingle = claim('aptp-vs-single-arch-fid');
    expect(fidSingle.values).toMatchObject({ aptp: 12.5, other: 15.25, macsRelDiff: rel });
    expect(fidSingle.status).toBe(rel <= 0.05 ? 'holds' : 'untested');
    expect(fidSingle.comparison).toContain(`APTP ${formatNumber(12.5)} < single-architecture baseline ${formatNumber(15.25)}`);
    // Random and no-OT: strict comparisons, no MACs condition.
    expect(claim('aptp-vs-random-fid').status).toBe('holds');
    expect(claim('aptp-vs-no-ot-adherence')).toMatchObject({ status: 'holds', values: { aptp: 17 / 24, other: 16 / 24, pValue: fisherExactTest(17, 24, 16, 24) } });
    expect(claim('aptp-vs-no-ot-adherence').comparison).toMatch(/; Fisher exact p = 1$/); // 17/24 vs 16/24 is no evidence
    // Teacher: fewer MACs holds, quality "as good as" the teacher does not (12.5 > 9.5).
    expect(claim('aptp-fewer-macs-than-teacher').status).toBe(aptp.meanMacs < 94.03e9 ? 'holds' : 'does not hold');
    expect(claim('aptp-vs-teacher-fid')).toMatchObject({ status: 'does not hold', values: { aptp: 12.5, other: 9.5 } });
    expect(claim('aptp-vs-teacher-fid').comparison).toContain('APTP 12.5 > full teacher 9.5');
    // (b) heavy categories, from the rows.
    for (const cat of ['text', 'relation']) {
      const inCat = r.prompts.filter((p) => p.category === cat);
      const rest = r.prompts.filter((p) => p.category !== cat);
      const mean = (xs: typeof inCat) => xs.reduce((s, p) => s + p.macs, 0) / xs.length;
      const p = permutationTest(inCat.map((x) => x.macs), rest.map((x) => x.macs), { seed: 0 });
      expect(claim(`larger-experts-for-${cat}`)).toMatchObject({ status: mean(inCat) > mean(rest) ? 'holds' : 'does not hold', values: { category: mean(inCat), rest: mean(rest), pValue: p } });
      expect(claim(`larger-experts-for-${cat}`).comparison).toContain(`; permutation p = ${p < 0.001 ? '< 0.001' : formatNumber(p, 3)}`);
    }
    // (c) code usage: [6,5,7,6] vs [20,4,0,0].
    const ot = codeUsageStats([6, 5, 7, 6]);
    const noOt = codeUsageStats([20, 4, 0, 0]);
    expect(noOt).toMatchObject({ total: 24, codesUsed: 2, maxShare: 20 / 24 });
    expect(noOt.entropy).toBeCloseTo(-(20 / 24) * Math.log(20 / 24) - (4 / 24) * Math.log(4 / 24), 14);
    expect(claim('ot-balances-code-usage')).toMatchObject({ status: 'holds', values: { withOt: ot.normalizedEntropy, withoutOt: noOt.normalizedEntropy } });
    expect(codeUsageStats([0, 0, 9]).normalizedEntropy).toBe(0);
    expect(codeUsageStats([3, 3]).normalizedEntropy).toBeCloseTo(1, 14);
  });

  test('claims flip when the numbers flip (no conclusion is fixed in advance)', () => {
    const find = (x: ReportInput, id: string) => buildReport(x).claims.find((c) => c.id === id)!;
    // Same MACs as the single-architecture baseline, arbitrary distances/adherence: status = strict comparison.
    fc.assert(
      fc.property(fc.double({ min: 0, max: 100, noNaN: true }), fc.double({ min: 0, max: 100, noNaN: true }), fc.integer({ min: 0, max: 24 }), fc.integer({ min: 0, max: 24 }), (fa, fb, ha, hb) => {
        const x = clone(input);
        const v = x.variants!;
        v[0]!.meanMacs = 50e9;
        v[5]!.meanMacs = 50e9 * 1.04; // inside the 5 % tolerance
        v[0]!.fid = fa;
        v[5]!.fid = fb;
        v[0]!.adherence = { overall: { hits: ha, total: 24 } };
        v[5]!.adherence = { overall: { hits: hb, total: 24 } };
        expect(find(x, 'aptp-vs-single-arch-fid').status).toBe(fa < fb ? 'holds' : 'does not hold');
        expect(find(x, 'aptp-vs-single-arch-adherence').status).toBe(ha > hb ? 'holds' : 'does not hold');
      }),
      { seed: 42, numRuns: 40 },
    );
    // Outside the tolerance: untested, with the MACs difference stated.
    const x = clone(input);
    x.variants![0]!.meanMacs = 50e9;
    x.variants![5]!.meanMacs = 50e9 * 1.2;
    const c = find(x, 'aptp-vs-single-arch-fid');
    expect(c.status).toBe('untested');
    expect(c.comparison).toMatch(/MACs differ by 16\.7 % \(> 5 % tolerance\)/);
    x.claimOptions = { sameMacsRelTol: 0.25 };
    expect(find(x, 'aptp-vs-single-arch-fid').status).toBe('holds');
    // Teacher: equality counts as "as good as".
    const t = clone(input);
    t.variants![8]!.fid = 12.5;
    expect(find(t, 'aptp-vs-teacher-fid').status).toBe('holds');
    // Code usage reversed.
    const u = clone(input);
    u.codeUsage = { withOt: [20, 4, 0, 0], withoutOt: [6, 5, 7, 6] };
    expect(find(u, 'ot-balances-code-usage').status).toBe('does not hold');
    u.codeUsage = { withOt: [1, 2] };
    expect(find(u, 'ot-balances-code-usage')).toMatchObject({ status: 'untested', comparison: 'code usage without OT missing' });
    // Heavy category routed to the smallest expert: does not hold.
    const h = clone(input);
    for (const p of h.prompts) p.expert = p.category === 'text' ? 0 : 3;
    for (const e of h.experts) e.promptsRouted = h.prompts.filter((p) => p.expert === e.id).length;
    expect(find(h, 'larger-experts-for-text').status).toBe('does not hold');
    h.claimOptions = { heavyCategories: ['glyphs'] };
    expect(find(h, 'larger-experts-for-glyphs')).toMatchObject({ status: 'untested', comparison: 'no "glyphs" prompts in the rows' });
    // Missing metric or missing APTP variant: untested, never guessed.
    const m = clone(input);
    m.variants![5]!.fid = null;
    expect(find(m, 'aptp-vs-single-arch-fid')).toMatchObject({ status: 'untested', comparison: 'FID-style distance missing for single-architecture baseline' });
    m.variants = m.variants!.filter((v) => v.kind !== 'aptp');
    expect(find(m, 'aptp-vs-random-fid')).toMatchObject({ status: 'untested', comparison: 'no APTP variant in the input' });
  });

  test('number formatting', () => {
    expect(formatNumber(12.3456)).toBe('12.35');
    expect(formatNumber(0.5)).toBe('0.5');
    expect(formatNumber(24)).toBe('24');
    expect(formatNumber(null)).toBe('–');
    expect(formatNumber(1.5e-5)).toBe('1.5e-5');
    expect(formatMacs(94.03e9)).toBe('94.03 G');
    expect(formatMacs(1384.2e9)).toBe('1.384 T');
    expect(formatMacs(812_400_000)).toBe('812.4 M');
    expect(formatRatio({ hits: 13, total: 16, ratio: 13 / 16 })).toBe('81.25 % (13/16)');
    expect(formatRatio({ hits: null, total: null, ratio: 0.3 })).toBe('30 %');
  });
});
