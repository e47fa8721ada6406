import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { Command, ConfigError, InputError, ProgressBar, SafetensorsReader, describeBackend, initBackend, type ProgressCallback } from '@aptp/core';
import {
  SyntheticAttributeClassifier,
  VARIANT_KINDS,
  buildReport,
  loadRgbImage,
  promptAdherence,
  syntheticFeatureDistances,
  writeReport,
  type AdherenceResult,
  type Report,
  type ReportInput,
  type RgbImage,
  type VariantKind,
} from '@aptp/eval';

/**
 * `eval` (issue 9 item 5, issue 11; APTP.md §8 on the synthetic world): scores `sample` output folders — one per model
 * variant (APTP routed experts, baselines, the full teacher) — against real images with the synthetic-world
 * evaluator, and writes `report.json` + a self-contained `report.html` (`buildReport` / `writeReport` of @aptp/eval).
 *
 * Per variant: FID- and CMMD-style distances between the evaluator's features of its images and of the reference
 * images, prompt adherence (overall, per category, per attribute) from the evaluator's predicted attributes, and the
 * mean MACs per UNet call of its manifest. The `aptp` variant also gives the experts (MACs, parameters, prompts
 * routed, mean latency), the per-prompt rows of the report (image grid per expert, MACs per category) and one
 * adherence-only variant per expert. Nothing is tuned here: every number comes from the files.
 *
 * Inputs (the config file; `--config eval.json`):
 *   variants    [{id, kind, name?, samples: <sample folder>, modelDir?: <the model folder it sampled>}], one kind `aptp`
 *   prompts     JSONL, one row per prompt index of the sample runs: {index, prompt, category, attributes} (attributes:
 *               the synthetic world's ground truth, for adherence)
 *   reference   a folder of real images (PNG/JPEG/.npy; all files, sorted by name)
 *   evaluator   the synthetic-world classifier folder (config.json + model.safetensors)
 *   codeUsage   optional {withOt, withoutOt}: prompts per code (claim (c))
 *   run         optional report metadata {title, command, seeds, config, notes, startedAt, runDir}
 *   out         where report.json / report.html go; every sample folder must be inside it (images are linked or
 *               embedded by their path relative to it)
 */
const variantSchema = z.strictObject({
  id: z.string().min(1).describe('variant id (unique)'),
  kind: z.enum(VARIANT_KINDS.filter((k) => k !== 'expert') as ['aptp', ...Exclude<VariantKind, 'aptp' | 'expert'>[]]).describe('aptp | teacher | singleArchitecture | random | noOt | baseline (per-expert rows are derived)'),
  name: z.string().optional(),
  samples: z.string().min(1).describe('a `sample` output folder: config.json, manifest.jsonl, images/'),
  modelDir: z.string().optional().describe('the model folder that was sampled (parameter counts per expert)'),
});
export type EvalVariant = z.output<typeof variantSchema>;

const runSchema = z.strictObject({
  title: z.string().optional(),
  command: z.string().optional(),
  runDir: z.string().optional(),
  startedAt: z.string().optional(),
  seeds: z.record(z.string(), z.number().int()).default({}),
  config: z.record(z.string(), z.unknown()).default({}),
  notes: z.array(z.string()).default([]),
});

const schema = z.strictObject({
  variants: z.array(variantSchema).min(1).optional().describe('model variants to score (config file only; see the file comment)'),
  prompts: z.string().optional().describe('JSONL {index, prompt, category, attributes} per prompt index of the samples (required)'),
  reference: z.string().optional().describe('folder of real images the FID/CMMD-style distances compare against (required)'),
  evaluator: z.string().default('apps/trainer/assets/evaluator').describe('synthetic-world classifier folder (config.json, model.safetensors)'),
  codeUsage: z.strictObject({ withOt: z.array(z.number().int().min(0)).optional(), withoutOt: z.array(z.number().int().min(0)).optional() }).optional().describe('prompts per code with and without OT (config file only)'),
  run: runSchema.optional().describe('report metadata (config file only)'),
  out: z.string().optional().describe('folder for report.json and report.html; the sample folders must be inside it (required)'),
  images: z.enum(['auto', 'embed', 'link']).default('auto').describe('report images: embedded data URIs, relative links, or auto (embed up to 300)'),
  backend: z.string().optional().describe('tensor backend: tfjs-node-gpu | tfjs-node | wasm | cpu (env APTP_BACKEND)'),
});
export type EvalArgs = z.output<typeof schema>;

type Attributes = Parameters<typeof promptAdherence>[1][number];

const promptRowSchema = z.strictObject({
  index: z.number().int().min(0),
  prompt: z.string(),
  category: z.string().min(1),
  attributes: z.record(z.string(), z.unknown()),
});
export type EvalPromptRow = { index: number; prompt: string; category: string; attributes: Attributes };

/** One line of a `sample` manifest (the fields eval reads). */
const manifestRowSchema = z.looseObject({
  index: z.number().int().min(0),
  file: z.string(),
  prompt: z.string(),
  seed: z.number().int(),
  expert: z.union([z.number().int().min(0), z.literal('full')]),
  macs: z.number().nonnegative(),
  imageLatencyMs: z.number().nonnegative().optional(),
});
type ManifestRow = z.output<typeof manifestRowSchema>;

const sampleConfigSchema = z.looseObject({
  experts: z.array(z.looseObject({ id: z.number().int().min(0), macs: z.number().nonnegative() })).default([]),
  fullMacs: z.number().positive(),
});

function readJsonl<T>(file: string, rowSchema: z.ZodType<T>, what: string): T[] {
  if (!fs.existsSync(file)) throw new InputError(`${what} not found`, { code: 'E_FILE_MISSING', file });
  const out: T[] = [];
  fs.readFileSync(file, 'utf8').split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === '') return;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch (err) {
      throw new InputError('not valid JSON', { code: 'E_JSON', file, field: `line ${i + 1}`, cause: err });
    }
    const r = rowSchema.safeParse(v);
    if (!r.success) {
      const issue = r.error.issues[0]!;
      throw new InputError(issue.message, { code: 'E_ROW', file, field: `line ${i + 1}: ${issue.path.join('.') || ((issue as { keys?: string[] }).keys ?? []).join(', ')}` });
    }
    out.push(r.data);
  });
  return out;
}

/** Reads the prompts file (one row per prompt index). */
export function readEvalPrompts(file: string): Map<number, EvalPromptRow> {
  const rows = readJsonl(file, promptRowSchema, 'prompts file');
  const byIndex = new Map<number, EvalPromptRow>();
  rows.forEach((r, i) => {
    if (byIndex.has(r.index)) throw new InputError('duplicate prompt index', { code: 'E_ROW', file, field: `line ${i + 1}: index`, found: r.index });
    byIndex.set(r.index, r as unknown as EvalPromptRow);
  });
  return byIndex;
}

const IMAGE_FILE = /\.(png|jpe?g|npy)$/i;

async function loadImages(files: readonly string[], label: string, onProgress?: ProgressCallback): Promise<RgbImage[]> {
  const out: RgbImage[] = [];
  for (const f of files) {
    out.push(await loadRgbImage(f));
    onProgress?.({ label, done: out.length, total: files.length });
  }
  return out;
}

/** Parameters of a UNet folder's weights (from the safetensors header). */
function unetParams(dir: string): number {
  const file = path.join(dir, 'diffusion_pytorch_model.safetensors');
  if (!fs.existsSync(file)) return 0;
  const r = new SafetensorsReader(file);
  try {
    return r.keys().reduce((s, k) => s + r.info(k).shape.reduce((a, b) => a * b, 1), 0);
  } finally {
    r.close();
  }
}

/** The UNet folder of expert k in a model folder (`experts/<k>/`, `experts/expert-<k>/`, either optionally `unet/`). */
function expertUNetDir(modelDir: string, k: number): string | null {
  for (const name of [String(k), `expert-${k}`]) {
    for (const d of [path.join(modelDir, 'experts', name), path.join(modelDir, 'experts', name, 'unet')]) if (fs.existsSync(path.join(d, 'config.json'))) return d;
  }
  return null;
}

interface ScoredVariant {
  variant: EvalVariant;
  rows: ManifestRow[];
  sampleConfig: z.output<typeof sampleConfigSchema>;
  adherence: AdherenceResult;
  fid: number;
  cmmd: number;
  meanMacs: number;
}

const mean = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

/** Scores every variant and builds the report input (see the file comment). */
export async function evaluateVariants(args: EvalArgs, options: { backend: string; onProgress?: ProgressCallback }): Promise<{ input: ReportInput; report: Report }> {
  const onProgress = options.onProgress;
  const required = { variants: args.variants, prompts: args.prompts, reference: args.reference, out: args.out };
  for (const [k, v] of Object.entries(required)) if (v === undefined) throw new ConfigError('missing option', { code: 'E_CONFIG_FIELD', field: k === 'variants' ? 'variants (config file)' : `--${k}` });
  const variants = args.variants!;
  const out = path.resolve(args.out!);
  const aptp = variants.filter((v) => v.kind === 'aptp');
  if (aptp.length !== 1) throw new ConfigError('exactly one variant of kind aptp is needed (its experts and prompt rows make the report)', { code: 'E_CONFIG_FIELD', field: 'variants', expected: 1, found: aptp.length });
  const ids = new Set<string>();
  for (const v of variants) {
    if (ids.has(v.id)) throw new ConfigError('duplicate variant id', { code: 'E_CONFIG_FIELD', field: 'variants', found: v.id });
    ids.add(v.id);
    const rel = path.relative(out, path.resolve(v.samples));
    if (rel.startsWith('..') || path.isAbsolute(rel)) throw new ConfigError('sample folders must be inside --out (the report links images relative to it)', { code: 'E_CONFIG_FIELD', field: `variants.${v.id}.samples`, expected: `inside ${out}`, found: v.samples });
  }
  const prompts = readEvalPrompts(args.prompts!);

  const classifier = SyntheticAttributeClassifier.load(args.evaluator);
  try {
    // reference features
    if (!fs.existsSync(args.reference!)) throw new InputError('reference image folder not found', { code: 'E_FILE_MISSING', file: args.reference });
    const refFiles = fs.readdirSync(args.reference!).filter((f) => IMAGE_FILE.test(f)).sort().map((f) => path.join(args.reference!, f));
    if (refFiles.length < 2) throw new InputError('too few reference images', { code: 'E_FILE_MISSING', file: args.reference, expected: 'at least 2 images', found: refFiles.length });
    const refFeatures = await classifier.features(await loadImages(refFiles, 'reference images', onProgress));

    const scored: ScoredVariant[] = [];
    for (const v of variants) {
      const dir = path.resolve(v.samples);
      const rows = readJsonl(path.join(dir, 'manifest.jsonl'), manifestRowSchema, `${v.id}: manifest`).sort((a, b) => a.index - b.index);
      if (rows.length < 2) throw new InputError('too few images to score', { code: 'E_ROW', file: path.join(dir, 'manifest.jsonl'), expected: 'at least 2', found: rows.length });
      const cfgFile = path.join(dir, 'config.json');
      if (!fs.existsSync(cfgFile)) throw new InputError('sample folder has no config.json', { code: 'E_FILE_MISSING', file: cfgFile });
      const sampleConfig = sampleConfigSchema.parse(JSON.parse(fs.readFileSync(cfgFile, 'utf8')));
      const attrs = rows.map((r) => {
        const p = prompts.get(r.index);
        if (!p) throw new InputError('no prompt row for this image', { code: 'E_ROW', file: args.prompts, field: `index ${r.index}`, expected: `the prompt of ${v.id} image ${r.file}` });
        if (p.prompt !== r.prompt) throw new InputError('the image was made from another prompt', { code: 'E_ROW', file: path.join(dir, 'manifest.jsonl'), field: `index ${r.index}`, expected: p.prompt, found: r.prompt });
        return p.attributes;
      });
      const images = await loadImages(rows.map((r) => path.join(dir, r.file)), `${v.id} images`, onProgress);
      const { predictions, features } = await classifier.predict(images);
      const dist = await syntheticFeatureDistances(features, refFeatures);
      scored.push({ variant: v, rows, sampleConfig, adherence: promptAdherence(predictions, attrs), fid: dist.fid, cmmd: dist.cmmd, meanMacs: mean(rows.map((r) => r.macs)) });
      onProgress?.({ label: 'variants', done: scored.length, total: variants.length });
    }

    // experts and prompt rows of the APTP variant
    const a = scored.find((s) => s.variant.kind === 'aptp')!;
    const routedRows = a.rows.filter((r): r is ManifestRow & { expert: number } => r.expert !== 'full');
    const expertIds = a.sampleConfig.experts.map((e) => e.id);
    const experts = a.sampleConfig.experts.map((e) => {
      const mine = routedRows.filter((r) => r.expert === e.id);
      const lat = mine.map((r) => r.imageLatencyMs).filter((x): x is number => x !== undefined);
      const dirK = a.variant.modelDir ? expertUNetDir(a.variant.modelDir, e.id) : null;
      return { id: e.id, macs: e.macs, macsRatio: Math.min(1, e.macs / a.sampleConfig.fullMacs), params: dirK ? unetParams(dirK) : 0, promptsRouted: mine.length, meanLatencyMs: lat.length > 0 ? mean(lat) : null };
    });
    const rowsOut = a.rows.flatMap((r, i) => (r.expert === 'full' ? [] : [{ r, adheres: a.adherence.perImage[i] ?? null }])).map(({ r, adheres }) => ({
      prompt: r.prompt,
      category: prompts.get(r.index)!.category,
      expert: r.expert as number,
      seed: r.seed,
      image: path.relative(out, path.join(path.resolve(a.variant.samples), r.file)).split(path.sep).join('/'),
      macs: r.macs,
      latencyMs: r.imageLatencyMs ?? null,
      adheres,
    }));
    const variantRows: NonNullable<ReportInput['variants']> = scored.map((s) => ({
      id: s.variant.id,
      kind: s.variant.kind,
      ...(s.variant.name ? { name: s.variant.name } : {}),
      meanMacs: s.meanMacs,
      fid: s.fid,
      cmmd: s.cmmd,
      adherence: { overall: s.adherence.overall, perCategory: s.adherence.perCategory, perAttribute: s.adherence.perAttribute },
      images: s.rows.length,
    }));
    // adherence of each expert on the prompts routed to it (too few images per expert for a distance)
    for (const id of expertIds) {
      const idx = a.rows.flatMap((r, i) => (r.expert === id ? [i] : []));
      if (idx.length === 0) continue;
      const hits = idx.filter((i) => a.adherence.perImage[i]).length;
      const perCategory: Record<string, { hits: number; total: number }> = {};
      for (const i of idx) {
        const c = (perCategory[prompts.get(a.rows[i]!.index)!.category] ??= { hits: 0, total: 0 });
        c.total += 1;
        if (a.adherence.perImage[i]) c.hits += 1;
      }
      variantRows.push({ id: `${a.variant.id}-expert-${id}`, kind: 'expert', expert: id, adherence: { overall: { hits, total: idx.length }, perCategory }, images: idx.length });
    }

    const run = args.run ?? runSchema.parse({});
    const input: ReportInput = {
      run: {
        title: run.title ?? 'APTP evaluation report',
        ...(run.command ? { command: run.command } : {}),
        runDir: run.runDir ?? out,
        startedAt: run.startedAt ?? new Date().toISOString(),
        finishedAt: new Date().toISOString(),
        backend: options.backend,
        seeds: run.seeds,
        config: { ...run.config, evaluator: path.resolve(args.evaluator), referenceImages: refFiles.length },
        notes: run.notes,
      },
      experts,
      prompts: rowsOut,
      variants: variantRows,
      codeUsage: args.codeUsage ?? {},
    };
    return { input, report: buildReport(input) };
  } finally {
    classifier.dispose();
  }
}

export const evalCommand: Command<typeof schema> = {
  name: 'eval',
  summary: 'score sample folders (APTP, baselines, teacher) with the synthetic-world evaluator; write report.json + report.html',
  schema,
  async run(args, ctx) {
    const choice = await initBackend({ backend: args.backend });
    ctx.err.write(`${describeBackend(choice).split('\n')[0]}\n`);
    const bar = new ProgressBar(ctx.err);
    const { report } = await evaluateVariants(args, { backend: choice.name, onProgress: bar.update });
    const written = writeReport(path.resolve(args.out!), report, { images: args.images });
    for (const v of report.variants.filter((x) => x.kind !== 'expert')) {
      ctx.out.write(`${v.name}: FID-style ${v.fid?.toFixed(3)}, CMMD-style ${v.cmmd?.toFixed(3)}, adherence ${((v.adherence?.overall.ratio ?? NaN) * 100).toFixed(1)} %, mean MACs ${(v.meanMacs / 1e6).toFixed(2)} M\n`);
    }
    for (const c of report.claims) ctx.out.write(`[${c.status}] ${c.claim}: ${c.comparison}\n`);
    if (written.missingImages.length > 0) ctx.err.write(`missing images: ${written.missingImages.join(', ')}\n`);
    ctx.out.write(`${written.jsonPath}\n${written.htmlPath}\n`);
    return 0;
  },
};
