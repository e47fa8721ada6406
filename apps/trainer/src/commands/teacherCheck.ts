import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { Command, ConfigError, ProgressBar, describeBackend, initBackend, writeJsonAtomic } from '@aptp/core';
import { SyntheticWorld, type SyntheticConfig } from '@aptp/datasets';
import { DEFAULT_TEACHER_DIR } from '../config/reference';
import { SyntheticAttributeClassifier } from '@aptp/eval';
import {
  SWAP_ATTRIBUTES,
  SWAP_TIMESTEPS,
  TEACHER_GUIDANCE,
  TEACHER_SAMPLE_SEED,
  captionReliance,
  formatGuidanceSweep,
  formatPromptSwap,
  formatReliance,
  guidanceSweep,
  loadTeacherParts,
  promptSwap,
  teacherSampleSheet,
  type PromptSwapRow,
  type SwapAttribute,
} from '../stages/teacherCheck';
import { checkWorldConfig } from '../stages/teacher';
import { EVALUATOR_ASSET_DIR } from './evaluator';

const num = () => z.coerce.number();

export const teacherCheckSchema = z.strictObject({
  teacher: z.string().default(DEFAULT_TEACHER_DIR).describe('teacher model folder'),
  samples: num().pipe(z.number().int().min(2)).default(32).describe('validation images for the caption-reliance losses'),
  timesteps: z.string().default('300,600,900').describe('comma-separated timesteps'),
  seed: num().pipe(z.number().int().min(0)).default(0).describe('noise seed (and the synthetic world seed)'),
  grid: z.string().optional().describe('also write a PNG of real renders above teacher samples (4 prompts per category)'),
  steps: num().pipe(z.number().int().min(1)).default(30).describe('DDIM steps of the --grid samples'),
  guidance: num().pipe(z.number().min(0)).default(TEACHER_GUIDANCE).describe("classifier-free guidance of the --grid samples (the demo's)"),
  guidanceSweep: z.string().optional().describe('comma-separated guidance scales: sample held-out prompts at each and read them with the evaluator'),
  sweepPrompts: num().pipe(z.number().int().min(2)).default(128).describe('prompts of the --guidance-sweep'),
  sweepFirstRow: num().pipe(z.number().int().min(0)).default(128).describe('first validation row of the sweep (the demo evaluates rows 0–127)'),
  sweepSteps: num().pipe(z.number().int().min(1)).default(20).describe('DDIM steps of the sweep samples (the demo’s)'),
  promptSwap: z.string().optional().describe(`comma-separated words to exchange in shape prompts (${SWAP_ATTRIBUTES.join(', ')}): does x̂0 follow the word? (read by the evaluator)`),
  swapSamples: num().pipe(z.number().int().min(1)).default(64).describe('shape-category validation prompts of --prompt-swap'),
  swapTimesteps: z.string().default(SWAP_TIMESTEPS.join(',')).describe('comma-separated timesteps of --prompt-swap'),
  evaluator: z.string().default(EVALUATOR_ASSET_DIR).describe('synthetic-world evaluator folder (for --guidance-sweep and --prompt-swap)'),
  engine: z.enum(['auto', 'tfjs']).default('auto').describe('UNet engine of --grid and --guidance-sweep: auto (ONNX Runtime on an in-memory export, ≈ 20× faster here) or tfjs (the eager model; equal to rounding)'),
  json: z.string().optional().describe('write the numbers to this JSON file'),
  backend: z.string().optional().describe('tensor backend: wasm | cpu | tfjs-node (env APTP_BACKEND)'),
});

/**
 * `aptp-trainer teacher-check`: does a teacher use its prompt? Prints the denoising error with the true, the empty
 * and a wrong caption on validation images (see stages/teacherCheck.ts) and optionally draws a sample sheet.
 */
export const teacherCheckCommand: Command<typeof teacherCheckSchema> = {
  name: 'teacher-check',
  summary: 'measure how much a teacher relies on its prompt (true vs empty vs wrong caption; one word swapped), draw samples, sweep the guidance scale',
  schema: teacherCheckSchema,
  async run(args, ctx) {
    const timesteps = args.timesteps.split(',').map((s) => Number(s.trim()));
    const swapTimesteps = args.swapTimesteps.split(',').map((s) => Number(s.trim()));
    const swaps = args.promptSwap?.split(',').map((s) => s.trim());
    const unknownSwap = swaps?.find((a) => !SWAP_ATTRIBUTES.includes(a as SwapAttribute));
    if (unknownSwap !== undefined) {
      throw new ConfigError('unknown --prompt-swap word', { field: '--prompt-swap', expected: SWAP_ATTRIBUTES.join(' | '), found: unknownSwap });
    }
    const guidances = args.guidanceSweep?.split(',').map((s) => Number(s.trim()));
    if (guidances?.some((g) => !Number.isFinite(g) || g < 0)) {
      throw new ConfigError('guidance scales must be non-negative numbers', { field: '--guidance-sweep', expected: 'e.g. 1,2,3,4.5,7.5', found: args.guidanceSweep });
    }
    const choice = await initBackend({ backend: args.backend });
    ctx.err.write(`${describeBackend(choice)}\n`);
    const parts = await loadTeacherParts(args.teacher);
    const T = parts.scheduler.config.numTrainTimesteps;
    for (const [field, list, raw] of [['--timesteps', timesteps, args.timesteps], ['--swap-timesteps', swapTimesteps, args.swapTimesteps]] as const) {
      if (list.some((t) => !Number.isInteger(t) || t < 0 || t >= T)) {
        parts.unet.dispose();
        throw new ConfigError('timesteps must be integers in [0, T)', { field, expected: `0 … ${T - 1}`, found: raw });
      }
    }
    const size = parts.unet.config.sampleSize;
    // the world the teacher was trained on (its provenance.json) without its training mix, at the teacher's size, with this seed
    const world = new SyntheticWorld({ ...checkWorldOf(args.teacher), seed: args.seed, imageSize: typeof size === 'number' ? size : 32 });
    let rows;
    const swapRows: PromptSwapRow[] = [];
    try {
      rows = captionReliance(parts, world, { samples: args.samples, timesteps, seed: args.seed });
      ctx.out.write(`caption reliance of ${args.teacher} (${args.samples} validation images; mean squared error of the prediction)\n`);
      ctx.out.write(formatReliance(rows));
      if (swaps) {
        const classifier = SyntheticAttributeClassifier.load(args.evaluator);
        try {
          for (const a of swaps) swapRows.push(...(await promptSwap(parts, world, classifier, a as SwapAttribute, { samples: args.swapSamples, timesteps: swapTimesteps, seed: args.seed })));
        } finally {
          classifier.dispose();
        }
        ctx.out.write(`prompt swap: x̂0 of ${args.swapSamples} noised shape-prompt renders, true vs one word exchanged, read by ${args.evaluator}\n`);
        ctx.out.write(formatPromptSwap(swapRows));
      }
    } finally {
      parts.unet.dispose();
    }
    let prompts: string[] | undefined;
    if (args.grid) {
      const bar = new ProgressBar(ctx.err);
      prompts = await teacherSampleSheet(args.teacher, world, args.grid, { steps: args.steps, guidance: args.guidance, engine: args.engine, onProgress: bar.update });
      ctx.out.write(`sample sheet: ${path.resolve(args.grid)}\n`);
    }
    let sweep;
    if (guidances) {
      const bar = new ProgressBar(ctx.err);
      const o = { guidances, firstRow: args.sweepFirstRow, prompts: args.sweepPrompts, steps: args.sweepSteps, seed: TEACHER_SAMPLE_SEED, engine: args.engine };
      sweep = { ...o, evaluator: args.evaluator, rows: await guidanceSweep(args.teacher, world, args.evaluator, { ...o, onProgress: bar.update }) };
      ctx.out.write(`guidance sweep: validation rows ${o.firstRow}–${o.firstRow + o.prompts - 1}, DDIM ${o.steps} steps, read by ${args.evaluator}\n`);
      ctx.out.write(formatGuidanceSweep(sweep.rows));
    }
    if (args.json) {
      writeJsonAtomic(args.json, { teacher: args.teacher, samples: args.samples, seed: args.seed, captionReliance: rows, promptSwap: swaps ? swapRows : null, grid: args.grid ?? null, gridPrompts: prompts ?? null, guidanceSweep: sweep ?? null });
    }
    return 0;
  },
};

/** The check world of a teacher folder (`checkWorldConfig` of its provenance.json's data set; the default world otherwise). */
function checkWorldOf(teacherDir: string): Partial<SyntheticConfig> {
  const file = path.join(teacherDir, 'provenance.json');
  if (!fs.existsSync(file)) return {};
  const dataset = (JSON.parse(fs.readFileSync(file, 'utf8')) as { config?: { dataset?: Record<string, unknown> } }).config?.dataset ?? {};
  const { seed: _seed, imageSize: _size, ...world } = checkWorldConfig(dataset as Parameters<typeof checkWorldConfig>[0]) ?? {};
  return world;
}
