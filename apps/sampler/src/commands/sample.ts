import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { AptpError, Command, ConfigError, InputError, ProgressBar, describeBackend, initBackend, writeJsonAtomic, type SamplerClassName } from '@aptp/core';
import { FULL, encodePng, loadAptpModel, planBatches, type AptpModel, type ExpertId, type SampleItem } from '../generate';

/**
 * `sample`: prompts (flags or a file) → route → group by expert → batched sampling → PNG files + manifest
 * (issue 8 §2; APTP.md §9). Writes `<out>/config.json` (the resolved options), `<out>/images/<index>.png` and
 * `<out>/manifest.jsonl` (one line per image, appended after every batch, so an interrupted run keeps what it made).
 */
const SCHEDULERS: Record<string, SamplerClassName> = { pndm: 'PNDMScheduler', ddim: 'DDIMScheduler', dpm: 'DPMSolverMultistepScheduler' };

const schema = z.strictObject({
  modelDir: z.string().optional().describe('APTP model folder: unet/, router, prompt_encoder/, experts/, scheduler/, text encoder [, vae_decoder/] (required)'),
  prompt: z.array(z.string()).optional().describe('a prompt; repeat the flag for more'),
  promptsFile: z.string().optional().describe('prompts: one per line, or JSONL (.jsonl) rows {prompt, seed?, steps?, guidance?, width?, height?}'),
  out: z.string().optional().describe('output folder (default: samples/<date-time>)'),
  seed: z.coerce.number().int().min(0).default(43).describe('base seed: prompt i gets seed + i unless its JSONL row has one (APTP.md §1.2: 43)'),
  steps: z.coerce.number().int().min(1).max(1000).default(25).describe('sampler steps (APTP.md §9: 25)'),
  guidance: z.coerce.number().min(0).max(100).default(7.5).describe('classifier-free guidance scale (APTP.md §9: 7.5; ≤ 1 turns guidance off)'),
  width: z.coerce.number().int().positive().optional().describe('image width in pixels (default: UNet sample_size × VAE factor)'),
  height: z.coerce.number().int().positive().optional().describe('image height in pixels (default: UNet sample_size × VAE factor)'),
  scheduler: z.enum(['pndm', 'ddim', 'dpm']).default('pndm').describe('sampler: PNDM (APTP evaluation), DDIM (APTP logging) or DPM-Solver++ (APTP.md §9)'),
  eta: z.coerce.number().min(0).max(1).default(0).describe('DDIM η (0 = deterministic)'),
  batchSize: z.coerce.number().int().min(1).max(256).default(8).describe('prompts per batch, one expert per batch (APTP.md §1.6: 8)'),
  expert: z.coerce.number().int().min(0).optional().describe('force every prompt onto this expert (no routing)'),
  full: z.boolean().default(false).describe('use the full unpruned model (for comparison)'),
  engine: z.enum(['auto', 'ort', 'tfjs']).default('auto').describe('UNet engine: auto = ONNX Runtime (export folder or in-memory export), tfjs only for UNets over 1 GiB'),
  routeNoise: z.enum(['reference', 'none']).default('reference').describe("router eval noise: the reference's for a prompt alone, or none (APTP.md §2.5)"),
  backend: z.string().optional().describe('tensor backend: tfjs-node-gpu | tfjs-node | wasm | cpu (env APTP_BACKEND)'),
});
export type SampleArgs = z.infer<typeof schema>;

const promptRowSchema = z.strictObject({
  prompt: z.string(),
  seed: z.number().int().min(0).optional(),
  steps: z.number().int().min(1).max(1000).optional(),
  guidance: z.number().min(0).max(100).optional(),
  width: z.number().int().positive().optional(),
  height: z.number().int().positive().optional(),
});
export type PromptRow = z.infer<typeof promptRowSchema>;

/** Reads a prompts file: JSONL (`.jsonl`/`.ndjson`: one `{prompt, …}` object per line) or plain text (one per line). Blank lines are skipped. */
export function readPromptsFile(file: string): PromptRow[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new InputError('cannot read the prompts file', { code: 'E_FILE_MISSING', file, cause: err });
  }
  const jsonl = /\.(jsonl|ndjson)$/i.test(file);
  const rows: PromptRow[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === '') return;
    if (!jsonl) {
      rows.push({ prompt: line.trim() });
      return;
    }
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch (err) {
      throw new InputError('not valid JSON', { code: 'E_JSON', file, field: `line ${i + 1}`, cause: err });
    }
    const r = promptRowSchema.safeParse(v);
    if (!r.success) {
      const issue = r.error.issues[0]!;
      const key = issue.path.join('.') || ((issue as { keys?: string[] }).keys ?? []).join(', ');
      throw new InputError(issue.message, { code: 'E_PROMPT_ROW', file, field: `line ${i + 1}${key ? `: ${key}` : ''}`, expected: 'prompt (string); optional seed, steps, guidance, width, height' });
    }
    rows.push(r.data);
  });
  return rows;
}

function defaultOut(): string {
  const t = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*$/, '').replace('T', '-');
  return path.join('samples', t);
}

const fmtMacs = (m: number): string => `${(m / 1e9).toFixed(m < 1e10 ? 3 : 1)} G`;

export const sampleCommand: Command<typeof schema> = {
  name: 'sample',
  summary: 'route prompts to experts and generate images in per-expert batches (PNG files + manifest.jsonl)',
  schema,
  async run(args, ctx) {
    if (!args.modelDir) throw new ConfigError('a model folder is required', { code: 'E_CONFIG_FIELD', field: '--model-dir' });
    if (args.full && args.expert !== undefined) throw new ConfigError('--full and --expert exclude each other', { code: 'E_CONFIG_FIELD', field: '--expert' });
    const rows: PromptRow[] = [...(args.prompt ?? []).map((prompt) => ({ prompt })), ...(args.promptsFile ? readPromptsFile(args.promptsFile) : [])];
    if (rows.length === 0) throw new ConfigError('no prompts: give --prompt (repeatable) or --prompts-file', { code: 'E_CONFIG_FIELD', field: '--prompt' });

    const choice = await initBackend({ backend: args.backend });
    ctx.err.write(`${describeBackend(choice).split('\n')[0]}\n`);
    const bar = new ProgressBar(ctx.err);
    const model = await loadAptpModel(args.modelDir, { engine: args.engine, routeNoise: args.routeNoise, onProgress: bar.update });
    try {
      return await sampleWith(model, rows, args, ctx);
    } finally {
      await model.dispose();
    }
  },
};

async function sampleWith(model: AptpModel, rows: PromptRow[], args: SampleArgs, ctx: Parameters<Command['run']>[1]): Promise<number | void> {
  const [dw, dh] = model.defaultSize;
  const multiple = model.sizeMultiple;
  const items: SampleItem[] = rows.map((r, i) => ({
    index: i,
    prompt: r.prompt,
    seed: r.seed ?? args.seed + i,
    steps: r.steps ?? args.steps,
    guidance: r.guidance ?? args.guidance,
    width: r.width ?? args.width ?? dw,
    height: r.height ?? args.height ?? dh,
    expert: 0,
    routed: false,
  }));
  for (const it of items) {
    for (const k of ['width', 'height'] as const) {
      if (it[k] % multiple !== 0) throw new ConfigError(`image ${k} must be a multiple of ${multiple} (VAE factor × 2^(down blocks − 1))`, { code: 'E_CONFIG_FIELD', field: `prompt ${it.index}: ${k}`, found: it[k] });
    }
  }
  if (args.expert !== undefined) model.expert(args.expert); // validates the id
  const forced: ExpertId | undefined = args.full ? FULL : args.expert;

  // 1. route (unless forced)
  const routeStart = performance.now();
  if (forced === undefined) {
    const ids = await model.route(items.map((it) => it.prompt), ctx.signal);
    items.forEach((it, i) => ((it.expert = ids[i]!), (it.routed = true)));
  } else items.forEach((it) => (it.expert = forced));
  const routeMs = performance.now() - routeStart;

  // 2. output folder
  const out = path.resolve(args.out ?? defaultOut());
  const imagesDir = path.join(out, 'images');
  fs.mkdirSync(imagesDir, { recursive: true });
  const manifestFile = path.join(out, 'manifest.jsonl');
  fs.writeFileSync(manifestFile, '');
  const scheduler = SCHEDULERS[args.scheduler]!;
  writeJsonAtomic(path.join(out, 'config.json'), {
    command: 'sample',
    ...args,
    modelDir: path.resolve(args.modelDir!),
    prompts: items.length,
    schedulerClass: scheduler,
    experts: model.experts.map((e) => ({ id: e.id, source: e.source, macs: model.macs(e.id) })),
    fullMacs: model.macs(FULL),
  });

  // 3. batches: one expert each
  const batches = planBatches(items, args.batchSize);
  const perExpert = new Map<string, number>();
  let done = 0;
  let stopped = false;
  const bar = new ProgressBar(ctx.err);
  const pad = String(Math.max(0, items.length - 1)).length;
  for (const [bi, batch] of batches.entries()) {
    if (ctx.signal.aborted) {
      stopped = true;
      break;
    }
    const expert = batch[0]!.expert;
    const label = `batch ${bi + 1}/${batches.length} (${expert === FULL ? 'full model' : `expert ${expert}`}, ${batch.length} prompt${batch.length === 1 ? '' : 's'})`;
    const start = performance.now();
    let images;
    try {
      images = await model.generate(expert, batch, { scheduler, eta: args.eta, signal: ctx.signal, onProgress: (p) => bar.update({ ...p, label }) });
    } catch (err) {
      if (err instanceof AptpError && err.code === 'E_ABORTED') {
        stopped = true;
        break;
      }
      throw err;
    }
    const batchMs = performance.now() - start;
    const lines: string[] = [];
    for (const [k, it] of batch.entries()) {
      const im = images[k]!;
      const file = path.join('images', `${String(it.index).padStart(pad, '0')}.png`);
      fs.writeFileSync(path.join(out, file), await encodePng(im.rgb, im.width, im.height));
      const macs = model.macs(expert, im.width, im.height);
      lines.push(
        JSON.stringify({
          index: it.index,
          file,
          prompt: it.prompt,
          seed: it.seed,
          expert,
          routed: it.routed,
          macs,
          macsRatio: macs / model.macs(FULL, im.width, im.height),
          latencyMs: Math.round(batchMs * 10) / 10,
          imageLatencyMs: Math.round((batchMs / batch.length) * 10) / 10,
          batchSize: batch.length,
          unetCalls: im.unetCalls,
          steps: it.steps,
          guidance: it.guidance,
          width: im.width,
          height: im.height,
          scheduler,
        }),
      );
      perExpert.set(String(expert), (perExpert.get(String(expert)) ?? 0) + 1);
    }
    fs.appendFileSync(manifestFile, lines.map((l) => `${l}\n`).join(''));
    done += batch.length;
  }
  const summary = [...perExpert.entries()].map(([e, n]) => `${e === FULL ? 'full' : `expert ${e}`} ×${n} (${fmtMacs(model.macs(e === FULL ? FULL : Number(e)))})`).join(', ');
  ctx.out.write(`${done}/${items.length} images${stopped ? ' (interrupted)' : ''}; routing ${routeMs.toFixed(0)} ms; ${summary || 'none'}\n${out}\n`);
  return undefined;
}
