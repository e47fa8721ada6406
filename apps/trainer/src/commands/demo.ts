import * as os from 'node:os';
import * as path from 'node:path';
import { z } from 'zod';
import { Command, InputError, ProgressBar } from '@aptp/core';
import { DEMO_BUDGETS, DEMO_FILES, findRepoRoot, runDemo } from '../stages/demo';

/**
 * `demo` (issue 11): the whole APTP pipeline on the synthetic world in one command — committed teacher → prune
 * (K = 4, p = 0.6) → route → fine-tune → sample → eval → report.html, with the single-architecture baseline, the full
 * teacher and a no-OT prune run for the claims — in one run folder, ending with the results table (results.md) and
 * the folder's path. `--quick` runs the same stages at a tiny size (CI).
 */
const schema = z.strictObject({
  quick: z.boolean().default(false).describe('tiny steps and sizes (≤ 3 minutes; what CI runs)'),
  out: z.string().optional().describe('run folder (default runs/demo-<time>)'),
  seed: z.coerce.number().int().min(0).default(43).describe('seed of every stage: pruning, fine-tuning, data order, sampling (APTP.md §1.2: 43)'),
  teacher: z.string().optional().describe('teacher model folder (default: the committed apps/trainer/assets/teacher)'),
  evaluator: z.string().optional().describe('synthetic-world evaluator folder (default: the committed apps/trainer/assets/evaluator)'),
  jobs: z.coerce.number().int().min(1).max(16).optional().describe('stages run at once, each a process (default: min(2, CPU cores))'),
  backend: z.string().optional().describe('tensor backend of the stages: wasm | cpu | tfjs-node (env APTP_BACKEND)'),
  trainerCli: z.string().optional().describe('trainer CLI script the stages run (default: the built apps/trainer/dist/main.js)'),
  samplerCli: z.string().optional().describe('sampler CLI script the stages run (default: the built apps/sampler/dist/main.js)'),
});
export type DemoArgs = z.output<typeof schema>;

const fmtTime = (s: number): string => `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s`;

export const demoCommand: Command<typeof schema> = {
  name: 'demo',
  summary: 'run the whole APTP pipeline on the synthetic world (prune → route → finetune → sample → eval → report.html)',
  schema,
  async run(args, ctx) {
    const root = findRepoRoot(__dirname) ?? findRepoRoot(process.cwd());
    if (!root) throw new InputError('cannot find the repository root (nx.json, apps/trainer) above this script or the working folder', { code: 'E_FILE_MISSING', file: __dirname });
    const mode = args.quick ? 'quick' : 'full';
    const out = path.resolve(args.out ?? path.join('runs', `demo-${new Date().toISOString().slice(0, 19).replace(/:/g, '-')}`));
    const bar = new ProgressBar(ctx.err);
    const tty = (ctx.err as { isTTY?: boolean }).isTTY === true;
    const note = (line: string): void => void ctx.err.write(`${tty ? '\r\x1b[K' : ''}demo: ${line}\n`);
    note(`${mode} run, seed ${args.seed}, run folder ${out}`);
    const result = await runDemo({
      out,
      mode,
      budget: DEMO_BUDGETS[mode],
      seed: args.seed,
      root,
      teacher: path.resolve(args.teacher ?? path.join(root, 'apps/trainer/assets/teacher')),
      evaluator: path.resolve(args.evaluator ?? path.join(root, 'apps/trainer/assets/evaluator')),
      trainerCli: path.resolve(args.trainerCli ?? path.join(root, 'apps/trainer/dist/main.js')),
      samplerCli: path.resolve(args.samplerCli ?? path.join(root, 'apps/sampler/dist/main.js')),
      jobs: args.jobs ?? Math.max(1, Math.min(2, os.availableParallelism())),
      backend: args.backend,
      signal: ctx.signal,
      onProgress: bar.update,
      onNote: note,
    });
    if (tty) ctx.err.write('\n');
    const cpu = result.timings.reduce((s, t) => s + (t.cpuSec ?? 0), 0);
    if (result.status === 'failed') {
      const f = result.failed!;
      ctx.err.write(`demo: stage ${f.stage} failed (exit code ${f.exitCode}); its log ${f.logFile} ends with:\n${f.tail}\n`);
      ctx.out.write(`${result.runDir}\n`);
      return f.exitCode;
    }
    if (result.status === 'aborted') {
      ctx.err.write(`demo: interrupted after ${fmtTime(result.wallSec)}; finished stages are kept in the run folder\n`);
      ctx.out.write(`${result.runDir}\n`);
      return undefined;
    }
    ctx.out.write(`\n${result.results}\n`);
    ctx.out.write(`demo: ${mode} run finished in ${fmtTime(result.wallSec)} wall, ${fmtTime(cpu)} CPU over ${result.timings.length} stages\n`);
    ctx.out.write(`report: ${path.join(result.runDir, DEMO_FILES.reportHtml)}\nresults: ${path.join(result.runDir, DEMO_FILES.results)}\n${result.runDir}\n`);
    return 0;
  },
};
