import { z } from 'zod';
import { Command, ProgressBar, initBackend, describeBackend } from '@aptp/core';
import { BASELINES, parsePruneConfig, type PruneConfig } from '../config/reference';
import { formatSummary } from '../loop/runTraining';
import { startRun } from '../loop/startRun';
import { runPrune } from '../stages/prune';

/**
 * `prune` (APTP stage 1): router + codebook training against the frozen teacher. Options: the reference-shaped config
 * (`seed`, `data`, `model`, `training`, `baseline`, `singleArchMacsRatio`; from `--config file.yaml`, defaults in `config/reference.ts`) and
 * flags for the common settings, which override the file.
 */
const int = () => z.coerce.number().int();
const section = (what: string) => z.unknown().optional().describe(`${what} (config file only; see configs/prune.*.yaml)`);

export const pruneCommandSchema = z.strictObject({
  seed: int().min(0).optional().describe('--seed (reference 43)'),
  data: section('data: { dataset, loader }'),
  model: section('model: { pretrainedModelNameOrPath, promptEncoder, router }'),
  training: section('training: { trainBatchSize, maxTrainSteps, hypernetPretrainingSteps, losses, optim, logging }'),
  baseline: z.enum(BASELINES).optional().describe('none (APTP) | singleArch | random | noOt'),
  singleArchMacsRatio: z.coerce.number().optional().describe('singleArch: export the learned architecture at this MACs ratio (0 < r ≤ 1; default: the noise-free sample, as the reference)'),
  teacher: z.string().optional().describe('teacher model folder (model.pretrainedModelNameOrPath)'),
  steps: int().min(0).optional().describe('training.maxTrainSteps (reference 5000)'),
  pretrainingSteps: int().min(0).optional().describe('training.hypernetPretrainingSteps (reference 500)'),
  batchSize: int().min(1).optional().describe('training.trainBatchSize (reference 64)'),
  numCodes: int().min(1).optional().describe('model.router.numCodes: K experts (reference 8)'),
  pruningTarget: z.coerce.number().optional().describe('training.losses.resourceLoss.pruningTarget: p, share of total MACs (reference 0.6)'),
  saveEvery: int().min(0).optional().describe('training.logging.checkpointingSteps'),
  out: z.string().optional().describe('run folder (default runs/prune-<time>)'),
  resume: z.string().optional().describe('continue a run: its folder or one of its checkpoint folders'),
  backend: z.string().optional().describe('tensor backend: tfjs-node-gpu | tfjs-node | wasm | cpu (env APTP_BACKEND)'),
});
export type PruneCommandArgs = z.output<typeof pruneCommandSchema>;

type Json = Record<string, unknown>;
const obj = (v: unknown): Json => (v !== null && typeof v === 'object' && !Array.isArray(v) ? { ...(v as Json) } : {});

/** Sets `path` in a nested plain object (creating sections), for flag overrides. */
export function setPath(root: Json, path: string[], value: unknown): void {
  let o = root;
  for (const k of path.slice(0, -1)) {
    o[k] = obj(o[k]);
    o = o[k] as Json;
  }
  o[path[path.length - 1]!] = value;
}

/** The resolved pruning config: file sections, then flags. */
export function pruneConfigFromArgs(args: PruneCommandArgs): PruneConfig {
  const raw: Json = {};
  for (const k of ['seed', 'data', 'model', 'training', 'baseline', 'singleArchMacsRatio'] as const) if (args[k] !== undefined) raw[k] = args[k];
  const flags: Array<[keyof PruneCommandArgs, string[]]> = [
    ['teacher', ['model', 'pretrainedModelNameOrPath']],
    ['steps', ['training', 'maxTrainSteps']],
    ['pretrainingSteps', ['training', 'hypernetPretrainingSteps']],
    ['batchSize', ['training', 'trainBatchSize']],
    ['numCodes', ['model', 'router', 'numCodes']],
    ['pruningTarget', ['training', 'losses', 'resourceLoss', 'pruningTarget']],
    ['saveEvery', ['training', 'logging', 'checkpointingSteps']],
  ];
  for (const [flag, p] of flags) if (args[flag] !== undefined) setPath(raw, p, args[flag]);
  return parsePruneConfig(raw);
}

export const pruneCommand: Command<typeof pruneCommandSchema> = {
  name: 'prune',
  summary: 'APTP stage 1: train the prompt router and K architecture codes against the frozen teacher',
  schema: pruneCommandSchema,
  async run(args, ctx) {
    const config = pruneConfigFromArgs(args);
    const backend = await initBackend({ backend: args.backend });
    ctx.err.write(`${describeBackend(backend)}\n`);
    const { run, checkpoint, notes } = startRun({ name: 'prune', out: args.out, resume: args.resume, config });
    for (const n of notes) ctx.err.write(`${n}\n`);
    const bar = new ProgressBar(ctx.err);
    try {
      const result = await runPrune({ config, run, checkpoint, signal: ctx.signal, onProgress: bar.update, onNote: (l) => ctx.err.write(`${l}\n`) });
      if (result.summary) ctx.out.write(formatSummary(result.summary));
      if (result.routerDir) {
        ctx.out.write(`router: ${result.routerDir}\n`);
        for (const e of result.experts) {
          ctx.out.write(`  code ${e.code}: MACs ${(e.macs / 1e6).toFixed(2)} M (ratio ${e.macsRatio.toFixed(3)}), resource ratio ${e.resourceRatio.toFixed(3)} (p' ${result.pPrime.toFixed(3)}), width kept ${(100 * e.keptWidth).toFixed(1)} %, depth gates kept ${e.keptDepth}\n`);
        }
      }
      ctx.out.write(`${run.dir}\n`);
      return 0;
    } finally {
      run.close();
    }
  },
};
