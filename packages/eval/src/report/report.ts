/**
 * The evaluation report (issue 9 item 5, issue 11 item 2; APTP.md §8, §8.5): validates everything a run measured —
 * run metadata, per-expert efficiency, per-prompt rows, quality per model variant, code usage with and without OT —
 * and derives the tables the report shows plus the paper's claims as tested. Every conclusion is computed here from
 * the numbers (strict comparisons, the compared values kept in the claim); nothing is decided in advance.
 * `html.ts` renders a `Report`; `writeReport` writes `report.json` and `report.html`.
 */
import { z } from 'zod';
import { InputError } from '@aptp/core';
import { latencyStats, macsPerPrompt, type LatencyStats } from '../efficiency';
import { fisherExactTest, permutationTest } from '../metrics/significance';

// ---- input schema ----------------------------------------------------------------------------------------------

const finite = z.number();
const count = z.number().int().nonnegative();
const isoDate = z.string().refine((s) => !Number.isNaN(Date.parse(s)), { message: 'expected an ISO date string' });

/** A path inside the run folder: relative, no `..` segments, no URL scheme. */
const runRelativePath = z
  .string()
  .min(1)
  .refine((p) => !/^[a-zA-Z][a-zA-Z0-9+.-]*:/.test(p) && !p.startsWith('/') && !p.startsWith('\\') && !p.split(/[\\/]/).includes('..'), {
    message: 'expected a path relative to the run folder (no leading /, no .., no scheme)',
  });

/**
 * A share: a plain number in [0, 1], or hits/total counts (e.g. `Ratio` of `synthetic/adherence.ts`, whose `ratio`
 * is recomputed here and may be NaN when total is 0), or null when unknown.
 */
const ratioInputSchema = z.union([
  z.number().min(0).max(1),
  z
    .strictObject({ hits: count, total: count, ratio: z.union([z.number(), z.nan(), z.null()]).optional() })
    .refine((r) => r.hits <= r.total, { message: 'hits must not exceed total', path: ['hits'] }),
  z.null(),
]);

const adherenceInputSchema = z.strictObject({
  overall: ratioInputSchema,
  perCategory: z.record(z.string(), ratioInputSchema).default({}),
  /** Accepted so that an `AdherenceResult` can be passed as is. */
  perAttribute: z.record(z.string(), ratioInputSchema).optional(),
  /** Accepted and dropped: per-image results belong in the prompt rows (`adheres`). */
  perImage: z.array(z.boolean()).optional(),
});

export const VARIANT_KINDS = ['aptp', 'expert', 'teacher', 'singleArchitecture', 'random', 'noOt', 'baseline'] as const;
export type VariantKind = (typeof VARIANT_KINDS)[number];

const KIND_LABEL: Record<VariantKind, string> = {
  aptp: 'APTP (routed experts)',
  expert: 'APTP expert',
  teacher: 'full teacher',
  singleArchitecture: 'single-architecture baseline',
  random: 'random-architecture baseline',
  noOt: 'APTP without OT',
  baseline: 'baseline',
};

export const reportInputSchema = z.strictObject({
  run: z.strictObject({
    title: z.string().default('APTP evaluation report'),
    /** Run folder as printed by the pipeline (informational; images are read relative to `writeReport`'s runDir). */
    runDir: z.string().optional(),
    command: z.string().optional(),
    startedAt: isoDate,
    finishedAt: isoDate.optional(),
    backend: z.string().min(1),
    seeds: z.record(z.string(), z.number().int()),
    /** The resolved config of the run (shown collapsed in the HTML). */
    config: z.record(z.string(), z.unknown()).default({}),
    notes: z.array(z.string()).default([]),
  }),
  experts: z
    .array(
      z.strictObject({
        id: count,
        name: z.string().optional(),
        /** MACs of one UNet call of this expert (batch 1). */
        macs: finite.nonnegative(),
        /** MACs relative to the full UNet, 0 to 1 (APTP.md §4.3/§4.4). */
        macsRatio: finite.min(0).max(1),
        params: count,
        /** Prompts routed to this expert (all evaluation prompts, not only the rows shown). */
        promptsRouted: count,
        meanLatencyMs: finite.nonnegative().nullable().default(null),
      }),
    )
    .min(1),
  /** One row per generated image of the routed APTP model (may be a subset of the routed prompts). */
  prompts: z.array(
    z.strictObject({
      prompt: z.string(),
      category: z.string().min(1),
      expert: count,
      seed: z.number().int(),
      /** Image file, relative to the run folder (e.g. `samples/expert-0/0003.png`). */
      image: runRelativePath,
      /** MACs of one UNet call for this prompt; defaults to its expert's MACs and must equal them when given. */
      macs: finite.nonnegative().optional(),
      latencyMs: finite.nonnegative().nullable().default(null),
      /** Prompt adherence of this image when known (synthetic world). */
      adheres: z.boolean().nullable().default(null),
    }),
  ),
  /** Quality per model variant; FID/CMMD-style distances from the same feature extractor for all variants. */
  variants: z.array(
    z.strictObject({
      id: z.string().min(1),
      name: z.string().optional(),
      kind: z.enum(VARIANT_KINDS),
      /** For kind `expert`: the expert id. */
      expert: count.optional(),
      /** Average MACs per UNet call; defaults for `aptp` (routed average) and `expert` (its MACs). */
      meanMacs: finite.nonnegative().optional(),
      fid: finite.nullable().default(null),
      cmmd: finite.nullable().default(null),
      clipScore: finite.nullable().default(null),
      adherence: adherenceInputSchema.nullable().default(null),
      images: count.optional(),
    }),
  ),
  /** Prompts per architecture code at the end of pruning, with and without optimal transport (APTP.md §2.5). */
  codeUsage: z
    .strictObject({ withOt: z.array(count).min(1).optional(), withoutOt: z.array(count).min(1).optional() })
    .default({}),
  claimOptions: z
    .strictObject({
      /** "Same average MACs": |APTP − baseline| ≤ tol · baseline. */
      sameMacsRelTol: finite.min(0).default(0.05),
      /** Categories the paper expects to be routed to larger experts (text rendering, two objects). */
      heavyCategories: z.array(z.string()).default(['text', 'relation']),
    })
    .prefault({}),
});

export type ReportInput = z.input<typeof reportInputSchema>;
type ParsedInput = z.output<typeof reportInputSchema>;

// ---- report types ----------------------------------------------------------------------------------------------

export interface ReportRatio {
  /** 0 to 1; null when unknown or when total is 0. */
  ratio: number | null;
  hits: number | null;
  total: number | null;
}

export interface ReportExpert {
  id: number;
  name: string;
  macs: number;
  macsRatio: number;
  params: number;
  promptsRouted: number;
  /** promptsRouted / Σ promptsRouted. */
  routedShare: number;
  meanLatencyMs: number | null;
}

export interface ReportPrompt {
  prompt: string;
  category: string;
  expert: number;
  seed: number;
  image: string;
  macs: number;
  latencyMs: number | null;
  adheres: boolean | null;
}

export interface ReportCategory {
  name: string;
  prompts: number;
  meanMacs: number;
  /** Prompts of this category per expert, in the order of `Report.experts`. */
  expertCounts: number[];
  /** Adherence of the APTP rows of this category whose `adheres` is known. */
  adherence: ReportRatio;
  meanLatencyMs: number | null;
}

export interface ReportVariant {
  id: string;
  name: string;
  kind: VariantKind;
  expert: number | null;
  meanMacs: number;
  /** meanMacs / teacher MACs (null without a teacher variant). */
  macsRatioToTeacher: number | null;
  fid: number | null;
  cmmd: number | null;
  clipScore: number | null;
  adherence: { overall: ReportRatio; perCategory: Record<string, ReportRatio>; perAttribute: Record<string, ReportRatio> } | null;
  images: number | null;
}

export interface CodeUsageStats {
  counts: number[];
  total: number;
  /** Codes with at least one prompt. */
  codesUsed: number;
  /** Shannon entropy of the usage distribution, nats. */
  entropy: number;
  /** entropy / ln(K) (1 = uniform; 1 for K = 1). */
  normalizedEntropy: number;
  /** Largest share of one code. */
  maxShare: number;
}

export type ClaimStatus = 'holds' | 'does not hold' | 'untested';

export interface ReportClaim {
  id: string;
  /** Which question of issue 11 it answers: (a) quality vs baselines/teacher, (b) MACs per category, (c) code usage. */
  group: 'quality' | 'macsByCategory' | 'codeUsage';
  claim: string;
  status: ClaimStatus;
  /** The comparison that decided the status, with the numbers (or why it is untested). */
  comparison: string;
  values: Record<string, number | null>;
}

export interface Report {
  schemaVersion: 1;
  run: ParsedInput['run'];
  summary: {
    prompts: number;
    promptsRouted: number;
    experts: number;
    /** Routed average MACs per UNet call over all routed prompts (Σ promptsRouted·macs / Σ promptsRouted). */
    meanMacsRouted: number;
    /** Average MACs per UNet call over the prompt rows. */
    meanMacsRows: number | null;
    teacherMacs: number | null;
    latency: LatencyStats | null;
    adherence: ReportRatio;
  };
  experts: ReportExpert[];
  prompts: ReportPrompt[];
  categories: ReportCategory[];
  variants: ReportVariant[];
  codeUsage: { withOt: CodeUsageStats | null; withoutOt: CodeUsageStats | null };
  claimOptions: ParsedInput['claimOptions'];
  claims: ReportClaim[];
}

// ---- formatting shared with html.ts (the claim comparisons are text) -------------------------------------------

/** A number with `digits` significant digits, no trailing zeros; '–' for null. */
export function formatNumber(x: number | null | undefined, digits = 4): string {
  if (x === null || x === undefined || Number.isNaN(x)) return '–';
  if (!Number.isFinite(x)) return x > 0 ? '∞' : '−∞';
  if (Number.isInteger(x) && Math.abs(x) < 1e6) return String(x);
  const a = Math.abs(x);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return x.toExponential(digits - 1).replace(/\.?0+e/, 'e');
  const s = x.toPrecision(digits);
  return s.includes('.') ? s.replace(/\.?0+$/, '') : s;
}

/** MACs with an SI prefix: 1.1828e12 → '1.183 T', 9.403e10 → '94.03 G'. */
export function formatMacs(x: number | null | undefined): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return '–';
  const units: [number, string][] = [[1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'k']];
  for (const [scale, unit] of units) if (Math.abs(x) >= scale) return `${formatNumber(x / scale)} ${unit}`;
  return formatNumber(x);
}

/** A share as a percentage with the counts when known: '81.25 % (13/16)'. */
export function formatRatio(r: ReportRatio | null | undefined): string {
  if (!r || r.ratio === null) return r && r.total === 0 ? '– (0/0)' : '–';
  const pct = `${formatNumber(100 * r.ratio)} %`;
  return r.hits !== null && r.total !== null ? `${pct} (${r.hits}/${r.total})` : pct;
}

// ---- building --------------------------------------------------------------------------------------------------

function fieldPath(p: readonly PropertyKey[]): string {
  return p.map((k, i) => (typeof k === 'number' ? `[${k}]` : i === 0 ? String(k) : `.${String(k)}`)).join('');
}

/** One-line InputError naming the first bad field of a zod failure. */
function inputErrorFromZod(err: z.ZodError, file?: string): InputError {
  let issue = err.issues[0]!;
  let path: PropertyKey[] = [...issue.path];
  while (issue.code === 'invalid_union' && (issue as { errors?: z.core.$ZodIssue[][] }).errors?.length) {
    const branches = (issue as unknown as { errors: z.core.$ZodIssue[][] }).errors.map((b) => b[0]!).filter(Boolean);
    const deepest = branches.reduce((a, b) => (b.path.length > a.path.length ? b : a));
    path = [...path, ...deepest.path];
    issue = deepest;
  }
  if (issue.code === 'unrecognized_keys') {
    const keys = (issue as { keys: string[] }).keys;
    return new InputError(`unknown key${keys.length > 1 ? `s ${keys.join(', ')}` : ''}`, { code: 'E_REPORT_FIELD', file, field: fieldPath([...path, keys[0]!]), cause: err });
  }
  const found = (issue as { input?: unknown }).input;
  return new InputError(issue.message, { code: 'E_REPORT_FIELD', file, field: fieldPath(path) || '(root)', found, cause: err });
}

function toRatio(r: z.output<typeof ratioInputSchema>): ReportRatio {
  if (r === null) return { ratio: null, hits: null, total: null };
  if (typeof r === 'number') return { ratio: r, hits: null, total: null };
  return { ratio: r.total > 0 ? r.hits / r.total : null, hits: r.hits, total: r.total };
}

const countRatio = (hits: number, total: number): ReportRatio => ({ ratio: total > 0 ? hits / total : null, hits, total });

/** Usage statistics of a code histogram. */
export function codeUsageStats(counts: readonly number[]): CodeUsageStats {
  const total = counts.reduce((a, b) => a + b, 0);
  let entropy = 0;
  let maxShare = 0;
  for (const c of counts) {
    if (c === 0 || total === 0) continue;
    const p = c / total;
    entropy -= p * Math.log(p);
    maxShare = Math.max(maxShare, p);
  }
  const k = counts.length;
  return {
    counts: [...counts],
    total,
    codesUsed: counts.filter((c) => c > 0).length,
    entropy,
    normalizedEntropy: total === 0 ? 0 : k > 1 ? entropy / Math.log(k) : 1,
    maxShare,
  };
}

/**
 * Validates the input (an `InputError` names the first bad field) and derives the report: per-category MACs and
 * adherence, routed averages, MACs relative to the teacher, code-usage statistics and the claims as tested.
 */
export function buildReport(input: unknown, options: { file?: string } = {}): Report {
  const parsed = reportInputSchema.safeParse(input);
  if (!parsed.success) throw inputErrorFromZod(parsed.error, options.file);
  const d = parsed.data;
  const bad = (field: string, message: string, expected?: unknown, found?: unknown): InputError =>
    new InputError(message, { code: 'E_REPORT_FIELD', file: options.file, field, expected, found });

  // Experts, in the order given; ids unique.
  const expertIndex = new Map<number, number>();
  d.experts.forEach((e, i) => {
    if (expertIndex.has(e.id)) throw bad(`experts[${i}].id`, 'duplicate expert id', 'unique ids', e.id);
    expertIndex.set(e.id, i);
  });
  const promptsRouted = d.experts.reduce((s, e) => s + e.promptsRouted, 0);
  const experts: ReportExpert[] = d.experts.map((e) => ({
    id: e.id,
    name: e.name ?? `expert ${e.id}`,
    macs: e.macs,
    macsRatio: e.macsRatio,
    params: e.params,
    promptsRouted: e.promptsRouted,
    routedShare: promptsRouted > 0 ? e.promptsRouted / promptsRouted : 0,
    meanLatencyMs: e.meanLatencyMs,
  }));
  const meanMacsRouted = promptsRouted > 0 ? d.experts.reduce((s, e) => s + e.promptsRouted * e.macs, 0) / promptsRouted : d.experts.reduce((s, e) => s + e.macs, 0) / d.experts.length;

  // Prompt rows: MACs come from the routed expert (efficiency.macsPerPrompt); a given value must agree.
  const routed = d.prompts.map((p, i) => {
    const k = expertIndex.get(p.expert);
    if (k === undefined) throw bad(`prompts[${i}].expert`, 'unknown expert id', [...expertIndex.keys()], p.expert);
    return k;
  });
  const categoriesOfRows = d.prompts.map((p) => p.category);
  const macs = macsPerPrompt(routed, d.experts.map((e) => e.macs), categoriesOfRows);
  const prompts: ReportPrompt[] = d.prompts.map((p, i) => {
    const m = macs.perPrompt[i]!;
    if (p.macs !== undefined && Math.abs(p.macs - m) > 1e-9 * Math.max(1, m)) {
      throw bad(`prompts[${i}].macs`, 'MACs differ from the routed expert', m, p.macs);
    }
    return { prompt: p.prompt, category: p.category, expert: p.expert, seed: p.seed, image: p.image, macs: m, latencyMs: p.latencyMs, adheres: p.adheres };
  });

  // Variants.
  const ids = new Set<string>();
  let teacherMacs: number | null = null;
  const variantsNoRatio = d.variants.map((v, i) => {
    if (ids.has(v.id)) throw bad(`variants[${i}].id`, 'duplicate variant id', 'unique ids', v.id);
    ids.add(v.id);
    if (v.kind === 'expert' && (v.expert === undefined || !expertIndex.has(v.expert))) {
      throw bad(`variants[${i}].expert`, 'an expert variant needs a known expert id', [...expertIndex.keys()], v.expert);
    }
    let meanMacs = v.meanMacs;
    if (meanMacs === undefined && v.kind === 'aptp') meanMacs = meanMacsRouted;
    if (meanMacs === undefined && v.kind === 'expert') meanMacs = d.experts[expertIndex.get(v.expert!)!]!.macs;
    if (meanMacs === undefined) throw bad(`variants[${i}].meanMacs`, `required for kind ${v.kind}`, 'a number', undefined);
    if (v.kind === 'teacher') {
      if (teacherMacs !== null) throw bad(`variants[${i}].kind`, 'more than one teacher variant', 'at most one', 'teacher');
      teacherMacs = meanMacs;
    }
    const adherence = v.adherence && {
      overall: toRatio(v.adherence.overall),
      perCategory: Object.fromEntries(Object.entries(v.adherence.perCategory).map(([k, r]) => [k, toRatio(r)])),
      perAttribute: Object.fromEntries(Object.entries(v.adherence.perAttribute ?? {}).map(([k, r]) => [k, toRatio(r)])),
    };
    return { id: v.id, name: v.name ?? (v.kind === 'expert' ? `${KIND_LABEL.expert} ${v.expert}` : KIND_LABEL[v.kind]), kind: v.kind, expert: v.expert ?? null, meanMacs, fid: v.fid, cmmd: v.cmmd, clipScore: v.clipScore, adherence, images: v.images ?? null };
  });
  const tMacs = teacherMacs as number | null;
  const variants: ReportVariant[] = variantsNoRatio.map((v) => ({ ...v, macsRatioToTeacher: tMacs !== null && tMacs > 0 ? v.meanMacs / tMacs : null }));

  // Categories: sorted union of the rows' categories and those named in variant adherence.
  const names = new Set<string>(categoriesOfRows);
  for (const v of variants) for (const c of Object.keys(v.adherence?.perCategory ?? {})) names.add(c);
  const categories: ReportCategory[] = [...names].sort().map((name) => {
    const rows = prompts.filter((p) => p.category === name);
    const expertCounts = experts.map((e) => rows.filter((r) => r.expert === e.id).length);
    const known = rows.filter((r) => r.adheres !== null);
    const lat = rows.filter((r) => r.latencyMs !== null).map((r) => r.latencyMs!);
    return {
      name,
      prompts: rows.length,
      meanMacs: macs.byCategory?.[name]?.meanMacs ?? 0,
      expertCounts,
      adherence: countRatio(known.filter((r) => r.adheres).length, known.length),
      meanLatencyMs: lat.length > 0 ? lat.reduce((a, b) => a + b, 0) / lat.length : null,
    };
  });

  const latencies = prompts.filter((p) => p.latencyMs !== null).map((p) => p.latencyMs!);
  const known = prompts.filter((p) => p.adheres !== null);
  const codeUsage = {
    withOt: d.codeUsage.withOt ? codeUsageStats(d.codeUsage.withOt) : null,
    withoutOt: d.codeUsage.withoutOt ? codeUsageStats(d.codeUsage.withoutOt) : null,
  };
  const report: Report = {
    schemaVersion: 1,
    run: d.run,
    summary: {
      prompts: prompts.length,
      promptsRouted,
      experts: experts.length,
      meanMacsRouted,
      meanMacsRows: prompts.length > 0 ? macs.meanMacs : null,
      teacherMacs: tMacs,
      latency: latencies.length > 0 ? latencyStats(latencies) : null,
      adherence: countRatio(known.filter((p) => p.adheres).length, known.length),
    },
    experts,
    prompts,
    categories,
    variants,
    codeUsage,
    claimOptions: d.claimOptions,
    claims: [],
  };
  report.claims = testClaims(report);
  return report;
}

// ---- claims ----------------------------------------------------------------------------------------------------

type Better = 'lower' | 'higher';

interface Metric {
  key: 'fid' | 'cmmd' | 'adherence';
  label: string;
  better: Better;
  value: (v: ReportVariant) => number | null;
  show: (v: ReportVariant) => string;
}

const METRICS: Metric[] = [
  { key: 'fid', label: 'FID-style distance', better: 'lower', value: (v) => v.fid, show: (v) => formatNumber(v.fid) },
  { key: 'cmmd', label: 'CMMD-style distance', better: 'lower', value: (v) => v.cmmd, show: (v) => formatNumber(v.cmmd) },
  { key: 'adherence', label: 'prompt adherence', better: 'higher', value: (v) => v.adherence?.overall.ratio ?? null, show: (v) => formatRatio(v.adherence?.overall) },
];

const status = (ok: boolean): ClaimStatus => (ok ? 'holds' : 'does not hold');
/** A p-value as text: 3 significant digits, "< 0.001" below. */
const formatP = (p: number): string => (p < 0.001 ? '< 0.001' : formatNumber(p, 3));

/** "APTP is better than `other` on `metric`" (strict), optionally only at the same average MACs. */
function qualityClaim(aptp: ReportVariant | undefined, other: ReportVariant, metric: Metric, sameMacsRelTol: number | null): ReportClaim {
  const id = `aptp-vs-${other.id}-${metric.key}`;
  const atSame = sameMacsRelTol !== null ? ' at the same average MACs' : '';
  const claim =
    other.kind === 'teacher'
      ? `APTP's ${metric.label} is as good as the full teacher's (${metric.better} or equal)`
      : `APTP has ${metric.better === 'lower' ? 'a lower' : 'a higher'} ${metric.label} than the ${other.name}${atSame}`;
  const a = aptp ? metric.value(aptp) : null;
  const b = metric.value(other);
  const values: Record<string, number | null> = { aptp: a, other: b, aptpMeanMacs: aptp?.meanMacs ?? null, otherMeanMacs: other.meanMacs };
  const base = { id, group: 'quality' as const, claim, values };
  if (!aptp) return { ...base, status: 'untested', comparison: 'no APTP variant in the input' };
  if (a === null || b === null) return { ...base, status: 'untested', comparison: `${metric.label} missing for ${a === null ? aptp.name : other.name}` };
  const macsText = `mean MACs ${formatMacs(aptp.meanMacs)} vs ${formatMacs(other.meanMacs)}`;
  const op = a < b ? '<' : a > b ? '>' : '=';
  const comparison = `${metric.label}: APTP ${metric.show(aptp)} ${op} ${other.name} ${metric.show(other)}; ${macsText}`;
  if (sameMacsRelTol !== null) {
    const rel = other.meanMacs > 0 ? Math.abs(aptp.meanMacs - other.meanMacs) / other.meanMacs : Math.abs(aptp.meanMacs - other.meanMacs) === 0 ? 0 : Infinity;
    values.macsRelDiff = Number.isFinite(rel) ? rel : null;
    if (rel > sameMacsRelTol) {
      return { ...base, status: 'untested', comparison: `${comparison} — MACs differ by ${formatNumber(100 * rel, 3)} % (> ${formatNumber(100 * sameMacsRelTol, 3)} % tolerance), not the same budget` };
    }
  }
  const ok = other.kind === 'teacher' ? (metric.better === 'lower' ? a <= b : a >= b) : metric.better === 'lower' ? a < b : a > b;
  // adherence as counts: how likely is a gap this large between two equal models? (distances have no per-image test;
  // a bare ratio without counts gets no p)
  const ra = aptp.adherence?.overall;
  const rb = other.adherence?.overall;
  if (metric.key === 'adherence' && ra?.hits != null && ra.total != null && rb?.hits != null && rb.total != null) {
    values.pValue = fisherExactTest(ra.hits, ra.total, rb.hits, rb.total);
    return { ...base, status: status(ok), comparison: `${comparison}; Fisher exact p = ${formatP(values.pValue)}` };
  }
  return { ...base, status: status(ok), comparison };
}

function testClaims(r: Report): ReportClaim[] {
  const claims: ReportClaim[] = [];
  const aptp = r.variants.find((v) => v.kind === 'aptp');
  const teacher = r.variants.find((v) => v.kind === 'teacher');

  // (a) quality vs baselines (single-architecture at the same average MACs) and vs the full teacher.
  for (const other of r.variants.filter((v) => v.kind === 'singleArchitecture' || v.kind === 'random' || v.kind === 'noOt' || v.kind === 'baseline')) {
    for (const m of METRICS) {
      if (m.value(other) === null && (!aptp || m.value(aptp) === null)) continue; // metric not measured in this run
      claims.push(qualityClaim(aptp, other, m, other.kind === 'singleArchitecture' ? r.claimOptions.sameMacsRelTol : null));
    }
  }
  if (teacher) {
    const a = aptp?.meanMacs ?? null;
    claims.push({
      id: 'aptp-fewer-macs-than-teacher',
      group: 'quality',
      claim: 'APTP uses fewer average MACs per UNet call than the full teacher',
      status: a === null ? 'untested' : status(a < teacher.meanMacs),
      comparison: a === null ? 'no APTP variant in the input' : `mean MACs: APTP ${formatMacs(a)} vs teacher ${formatMacs(teacher.meanMacs)} (ratio ${formatNumber(a / teacher.meanMacs)})`,
      values: { aptpMeanMacs: a, teacherMeanMacs: teacher.meanMacs },
    });
    for (const m of METRICS) {
      if (m.value(teacher) === null && (!aptp || m.value(aptp) === null)) continue;
      claims.push(qualityClaim(aptp, teacher, m, null));
    }
  }

  // (b) are the heavy categories (text rendering, two objects) routed to larger experts than the other prompts?
  for (const name of r.claimOptions.heavyCategories) {
    const inCat = r.prompts.filter((p) => p.category === name);
    const rest = r.prompts.filter((p) => p.category !== name);
    const mean = (rows: ReportPrompt[]): number => rows.reduce((s, p) => s + p.macs, 0) / rows.length;
    const base = { id: `larger-experts-for-${name}`, group: 'macsByCategory' as const, claim: `"${name}" prompts are routed to larger experts (more mean MACs) than the other prompts` };
    if (inCat.length === 0 || rest.length === 0) {
      claims.push({ ...base, status: 'untested', comparison: inCat.length === 0 ? `no "${name}" prompts in the rows` : `only "${name}" prompts in the rows`, values: { category: null, rest: null } });
      continue;
    }
    const [a, b] = [mean(inCat), mean(rest)];
    const p = permutationTest(inCat.map((x) => x.macs), rest.map((x) => x.macs), { seed: 0 });
    claims.push({
      ...base,
      status: status(a > b),
      comparison: `mean MACs: "${name}" ${formatMacs(a)} (${inCat.length} prompts) ${a > b ? '>' : a < b ? '<' : '='} other ${formatMacs(b)} (${rest.length} prompts); permutation p = ${formatP(p)}`,
      values: { category: a, rest: b, pValue: p },
    });
  }

  // (c) code usage: OT spreads prompts over the codes; without it routing collapses (APTP.md §8.5 ablation).
  const { withOt, withoutOt } = r.codeUsage;
  const base = { id: 'ot-balances-code-usage', group: 'codeUsage' as const, claim: 'Optimal transport spreads prompts over more codes than routing without OT (higher normalised entropy of code usage)' };
  if (!withOt || !withoutOt) {
    claims.push({ ...base, status: 'untested', comparison: `code usage ${!withOt ? 'with' : 'without'} OT missing`, values: { withOt: withOt?.normalizedEntropy ?? null, withoutOt: withoutOt?.normalizedEntropy ?? null } });
  } else {
    const [a, b] = [withOt.normalizedEntropy, withoutOt.normalizedEntropy];
    claims.push({
      ...base,
      status: status(a > b),
      comparison: `normalised entropy: with OT ${formatNumber(a)} (${withOt.codesUsed}/${withOt.counts.length} codes used, max share ${formatNumber(withOt.maxShare)}) ${a > b ? '>' : a < b ? '<' : '='} without OT ${formatNumber(b)} (${withoutOt.codesUsed}/${withoutOt.counts.length} codes used, max share ${formatNumber(withoutOt.maxShare)})`,
      values: { withOt: a, withoutOt: b },
    });
  }
  return claims;
}
