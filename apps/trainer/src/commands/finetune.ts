import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { Command, ConfigError, ProgressBar, initBackend, describeBackend } from '@aptp/core';
import { parseFinetuneConfig, type FinetuneConfig } from '../config/reference';
import { findLatestCheckpoint } from '../checkpoint';
import { formatSummary } from '../loop/runTraining';
import { startRun } from '../loop/startRun';
import { FINETUNE_FILES, runFinetune } from '../stages/finetune';
import { readExperts } from '../stages/prune';
import { readRouting } from '../stages/route';
import { setPath } from './prune';

/**
 * `finetune`: slice expert k (or every expert) from the teacher and fine-tune it on its routed prompts. Each expert is
 * its own run folder `<out>/expert-<k>/` (checkpoints, metrics.jsonl, and at the end `unet/`); with `--resume`,
 * finished experts are skipped and unfinished ones continue from their latest checkpoint.
 */
const int = () => z.coerce.number().int();
const section = (what: string) => z.unknown().optional().describe(`${what} (config file only; see configs/finetune.*.yaml)`);

export const finetuneCommandSchema = z.strictObject({
  prune: z.string().describe('the prune run folder (router/, experts.json)'),
  routing: z.string().optional().describe('the route mapping of the training split (default <prune>/routing-train.json)'),
  expert: z.string().default('all').describe('expert id, or all'),
  seed: int().min(0).optional().describe('--seed (reference 43)'),
  data: section('data: { loader }'),
  model: section('model: { pretrainedModelNameOrPath }'),
  training: section('training: { trainBatchSize, maxTrainSteps, losses, optim, logging }'),
  teacher: z.string().optional().describe('teacher model folder (default: the prune run\'s)'),
  steps: int().min(0).optional().describe('training.maxTrainSteps (reference 30000)'),
  batchSize: int().min(1).optional().describe('training.trainBatchSize (reference 128)'),
  saveEvery: int().min(0).optional().describe('training.logging.checkpointingSteps'),
  out: z.string().optional().describe('folder of the expert runs (default runs/finetune-<time>)'),
  resume: z.boolean().optional().describe('continue the experts in --out'),
  backend: z.string().optional().describe('tensor backend: tfjs-node-gpu | tfjs-node | wasm | cpu (env APTP_BACKEND)'),
});
export type FinetuneCommandArgs = z.output<typeof finetuneCommandSchema>;

export function finetuneConfigFromArgs(args: FinetuneCommandArgs, pruneTeacher?: string): FinetuneConfig {
  const raw: Record<string, unknown> = {};
  for (const k of ['seed', 'data', 'model', 'training'] as const) if (args[k] !== undefined) raw[k] = args[k];
  const teacher = args.teacher ?? ((raw.model as Record<string, unknown> | undefined)?.pretrainedModelNameOrPath as string | undefined) ?? pruneTeacher;
  if (teacher !== undefined) setPath(raw, ['model', 'pretrainedModelNameOrPath'], teacher);
  if (args.steps !== undefined) setPath(raw, ['training', 'maxTrainSteps'], args.steps);
  if (args.batchSize !== undefined) setPath(raw, ['training', 'trainBatchSize'], args.batchSize);
  if (args.saveEvery !== undefined) setPath(raw, ['training', 'logging', 'checkpointingSteps'], args.saveEvery);
  return parseFinetuneConfig(raw);
}

export const finetuneCommand: Command<typeof finetuneCommandSchema> = {
  name: 'finetune',
  summary: 'slice experts from the teacher and fine-tune each on its routed prompts (one expert or all)',
  schema: finetuneCommandSchema,
  async run(args, ctx) {
    const pruneCfg = JSON.parse(fs.readFileSync(path.join(args.prune, 'config.json'), 'utf8')) as { model?: { pretrainedModelNameOrPath?: string } };
    const config = finetuneConfigFromArgs(args, pruneCfg.model?.pretrainedModelNameOrPath);
    const routing = readRouting(args.routing ?? path.join(args.prune, 'routing-train.json'));
    const K = readExperts(args.prune).experts.length;
    const experts = args.expert === 'all' ? Array.from({ length: K }, (_, k) => k) : [Number(args.expert)];
    for (const k of experts) if (!(Number.isInteger(k) && k >= 0 && k < K)) throw new ConfigError('no such expert', { field: '--expert', expected: `0..${K - 1} or all`, found: args.expert });
    if (args.resume && !args.out) throw new ConfigError('--resume needs --out (the folder of the expert runs)', { field: '--resume' });
    const backend = await initBackend({ backend: args.backend });
    ctx.err.write(`${describeBackend(backend)}\n`);
    const root = args.out ?? path.join('runs', `finetune-${new Date().toISOString().replace(/[:.]/g, '-')}`);
    const bar = new ProgressBar(ctx.err);
    for (const k of experts) {
      if (ctx.signal.aborted) break;
      const dir = path.join(root, `expert-${k}`);
      if (args.resume && fs.existsSync(path.join(dir, FINETUNE_FILES.unet, 'config.json'))) {
        ctx.err.write(`expert ${k}: already finished (${dir})\n`);
        continue;
      }
      const hasCheckpoint = args.resume && fs.existsSync(dir) && findLatestCheckpoint(dir) !== null;
      const { run, checkpoint, notes } = startRun({ name: `expert-${k}`, out: dir, resume: hasCheckpoint ? dir : undefined, config: { ...config, expert: k, pruneRun: args.prune } });
      for (const n of notes) ctx.err.write(`${n}\n`);
      try {
        const r = await runFinetune({ config, pruneRun: args.prune, routing, expert: k, run, checkpoint, signal: ctx.signal, onProgress: bar.update });
        ctx.out.write(formatSummary(r.summary));
        ctx.out.write(`  expert ${k}: ${r.rows} prompts, ${r.parameters} parameters${r.expertDir ? `, written to ${r.expertDir}` : ''}\n`);
      } finally {
        run.close();
      }
    }
    ctx.out.write(`${root}\n`);
    return 0;
  },
};
