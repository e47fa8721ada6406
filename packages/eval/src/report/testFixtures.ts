/**
 * Test fixture (not exported): a fake but well-formed run folder for report tests — synthetic-world images written
 * as PNGs under `samples/expert-<id>/`, routed to K experts by a fixed rule, with made-up quality numbers. The
 * numbers are arbitrary inputs; tests derive their expectations from them, never the other way round.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SyntheticWorld, encodePng } from '@aptp/datasets';
import type { ReportInput } from './report';

export interface SampleRunOptions {
  prompts?: number;
  experts?: number;
  /** Write the PNG files (default true). */
  writeImages?: boolean;
  /** Extra prompt rows appended verbatim (e.g. hostile text). */
  extraPrompts?: { prompt: string; category: string }[];
}

const TEACHER_MACS = 94.03e9;

export async function makeSampleRun(runDir: string, o: SampleRunOptions = {}): Promise<ReportInput> {
  const n = o.prompts ?? 24;
  const k = o.experts ?? 4;
  const world = new SyntheticWorld({ seed: 7, split: 'validation' });
  const ratios = Array.from({ length: k }, (_, e) => 0.35 + (0.5 * e) / Math.max(1, k - 1));
  const rows: NonNullable<ReportInput['prompts']> = [];
  const items = Array.from({ length: n }, (_, i) => world.sample('validation', i)).map((s) => ({ prompt: s.caption, category: s.attributes.category as string, image: s.image }));
  for (const extra of o.extraPrompts ?? []) items.push({ ...extra, image: world.sample('validation', 0).image });
  for (let i = 0; i < items.length; i++) {
    const it = items[i]!;
    // Text and relation prompts lean to the larger experts (a routing rule of this fixture only).
    const heavy = it.category === 'text' || it.category === 'relation';
    const expert = heavy ? k - 1 - (i % Math.min(2, k)) : i % Math.max(1, k - 1);
    const image = `samples/expert-${expert}/${String(i).padStart(4, '0')}.png`;
    if (o.writeImages !== false) {
      fs.mkdirSync(path.join(runDir, path.dirname(image)), { recursive: true });
      fs.writeFileSync(path.join(runDir, image), await encodePng(it.image));
    }
    rows.push({ prompt: it.prompt, category: it.category, expert, seed: 43, image, latencyMs: 20 + 10 * ratios[expert]! + (i % 3), adheres: i % 4 !== 0 });
  }
  const routed = Array.from({ length: k }, (_, e) => rows.filter((r) => r.expert === e).length);
  return {
    run: {
      title: 'Sample <APTP> report & checks',
      runDir,
      command: 'npx nx run trainer:demo --quick',
      startedAt: '2025-01-02T03:04:05.000Z',
      finishedAt: '2025-01-02T03:14:05.000Z',
      backend: 'wasm',
      seeds: { world: 7, train: 0, sample: 43 },
      config: { prune: { numCodes: k, target: 0.6 }, note: '<b>not bold</b>' },
      notes: ['fixture run'],
    },
    experts: ratios.map((r, e) => ({ id: e, macs: r * TEACHER_MACS, macsRatio: r, params: Math.round(865e6 * (0.4 + 0.6 * r)), promptsRouted: routed[e]!, meanLatencyMs: 20 + 10 * r })),
    prompts: rows,
    variants: [
      { id: 'aptp', kind: 'aptp', fid: 12.5, cmmd: 0.81, adherence: { overall: { hits: 17, total: 24 }, perCategory: { shape: { hits: 5, total: 6 }, count: { hits: 4, total: 6 }, relation: { hits: 4, total: 6 }, text: { hits: 4, total: 6, ratio: 4 / 6 } } } },
      ...ratios.map((_, e) => ({ id: `expert-${e}`, kind: 'expert' as const, expert: e, fid: 14 + e, cmmd: 0.9 - 0.05 * e, adherence: { overall: 0.6 + 0.05 * e } })),
      { id: 'single-arch', kind: 'singleArchitecture', meanMacs: 0.62 * TEACHER_MACS, fid: 15.25, cmmd: 0.95, adherence: { overall: { hits: 14, total: 24 } } },
      { id: 'random', kind: 'random', meanMacs: 0.5 * TEACHER_MACS, fid: 30.5, cmmd: 1.7, adherence: { overall: 0.3 } },
      { id: 'no-ot', kind: 'noOt', meanMacs: 0.58 * TEACHER_MACS, fid: 13.75, cmmd: 0.88, adherence: { overall: { hits: 16, total: 24 } } },
      { id: 'teacher', kind: 'teacher', meanMacs: TEACHER_MACS, fid: 9.5, cmmd: 0.5, adherence: { overall: { hits: 20, total: 24 }, perCategory: { text: { hits: 5, total: 6 } } } },
    ],
    codeUsage: { withOt: [6, 5, 7, 6].slice(0, k), withoutOt: [20, 4, 0, 0].slice(0, k) },
  };
}
