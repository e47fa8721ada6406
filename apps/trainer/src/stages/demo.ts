import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ConfigError, InputError, writeJsonAtomic, type ProgressCallback } from '@aptp/core';
import { SyntheticWorld, encodePng, writeContactSheet } from '@aptp/datasets';
import { formatMacs, formatNumber, formatRatio, loadRgbImage, type AdherenceAttribute, type CodeUsageStats, type Report, type ReportRatio } from '@aptp/eval';
import { readModelUNetConfig } from '@aptp/unet-gating';
import { parseFinetuneConfig, parsePruneConfig, type PruneConfig } from '../config/reference';
import { assembleModel } from './assembleModel';
import { TEACHER_GUIDANCE } from './teacherCheck';
import { readExperts } from './prune';
import { datasetForSplit, readRouting } from './route';

/**
 * The embedded default (issue 11): one command runs the whole APTP pipeline on the synthetic world —
 *
 *   committed teacher → prune (K = 4, p = 0.6) → route → fine-tune every expert → model folder → sample → eval
 *   + the baselines the claims need: the single-architecture baseline (prune `singleArch` at the same p, fine-tuned
 *     the same way), the full teacher, and a prune run without optimal transport (code usage)
 *
 * — and ends with `report.html` and a markdown table of the claims' numbers (`results.md`). This file only orders the
 * work: every stage is the trainer's or the sampler's own CLI command, run as a child process (the stages are
 * independent processes, so two of them run at once on two cores), with the model-folder assembly, the prompt files,
 * the reference images and the contact sheets done here. Each stage is deterministic for the seed (keyed randomness,
 * per-prompt sampling seeds), so the whole run is, whatever the order the stages finish in.
 *
 * Run folder:
 *   config.json            the resolved demo settings (budget, seed, teacher, evaluator, stage configs)
 *   metrics.jsonl          one line per finished stage: wall and CPU seconds, exit code
 *   configs/               the stage configs (from configs/*.synthetic.yaml + the budget)
 *   prompts/               eval.jsonl (the sampler's prompts + seeds), eval-attributes.jsonl (ground truth)
 *   reference/             real images of the eval prompts (FID/CMMD-style reference)
 *   prune/{aptp,single-arch,no-ot}/          training runs (checkpoints, metrics.jsonl, router/, experts.json, routing-train.json)
 *   finetune/{aptp,single-arch}/expert-<k>/  training runs ending in unet/
 *   models/{aptp,single-arch,teacher}/       sampler model folders (with ONNX exports)
 *   samples/{aptp,single-arch,teacher}/      images/, manifest.jsonl
 *   grids/                 contact sheets: one per APTP expert, the baseline, the teacher
 *   logs/<stage>.log       each stage's output
 *   report.json, report.html, results.md
 */

export interface DemoBudget {
  /** Eval prompts: rows 0 … n−1 of the world's validation split (prompts never trained on); also the reference images. */
  evalPrompts: number;
  /** Training-split rows routed to the experts (the fine-tuning pool) and used for code usage (claim (c)). */
  trainPrompts: number;
  pruneSteps: number;
  pretrainingSteps: number;
  /** Fine-tuning steps per expert (the reference gives every expert the same steps, the single-architecture one too). */
  finetuneSteps: number;
  /** Prune and fine-tune batch size. */
  batchSize: number;
  checkpointEvery: number;
  /** Sampling protocol (APTP.md §9 uses PNDM, 25 steps, CFG 7.5 for SD 2.1; here DDIM and {@link TEACHER_GUIDANCE}). */
  scheduler: 'pndm' | 'ddim' | 'dpm';
  sampleSteps: number;
  guidance: number;
  sampleBatchSize: number;
}

/**
 * The two budgets. `full` is sized to finish in ≤ 15 minutes on 2 idle cores (wasm training, ONNX Runtime sampling;
 * measured per stage, see the README's Demo section); `quick` runs every stage at a tiny size (CI, ≤ 3 minutes).
 * The evaluation protocol (prompts, sampler, metrics) is fixed here in advance and never adjusted to the results.
 */
export const DEMO_BUDGETS: Record<'full' | 'quick', DemoBudget> = {
  full: {
    evalPrompts: 128,
    trainPrompts: 4000,
    pruneSteps: 240,
    pretrainingSteps: 48,
    finetuneSteps: 48,
    batchSize: 8,
    checkpointEvery: 80,
    scheduler: 'ddim',
    sampleSteps: 20,
    guidance: TEACHER_GUIDANCE,
    sampleBatchSize: 16,
  },
  quick: {
    evalPrompts: 12,
    trainPrompts: 200,
    pruneSteps: 6,
    pretrainingSteps: 2,
    finetuneSteps: 3,
    batchSize: 4,
    checkpointEvery: 3,
    scheduler: 'ddim',
    sampleSteps: 6,
    guidance: TEACHER_GUIDANCE,
    sampleBatchSize: 12,
  },
};

/**
 * CPU seconds per unit, measured here with the committed 16 px teacher (wasm training: a prune step of batch 8 ≈ 0.5 s,
 * a fine-tuning step ≈ 0.55 s; ONNX Runtime sampling ≈ 0.008 s per image and UNet call with CFG). Progress weights only.
 */
const COST = { pruneStep: 0.5, finetuneStep: 0.55, imageStep: 0.008, process: 3, route: 2, eval: 5, assemble: 1 } as const;

/**
 * How far (in logit units) a directly learned gate logit must be able to travel in the demo's short pruning runs.
 * The architecture codes (and the single-architecture vector) *are* gate logits: they start at ≈ 0 behind the +3
 * offset of the Gumbel-sigmoid (APTP.md §2.3–2.4), and AdamW moves a parameter by at most ≈ lr per step, so no gate
 * can close before 3 / lr steps. The committed config's 1e-2 is sized for its 300 steps; the demo's budget has fewer,
 * so those parameters get lr = CODE_TRAVEL / (steps they train in): a gate can close by the middle of that phase,
 * leaving the second half for the losses to balance the budget (with 4, a dev run's codes were still closing at the
 * last step: MACs ratios 0.75–0.95 for a 0.6 target). The predictor (a 768 → L linear map) keeps the config's rate.
 * A training setting forced by the time budget; the evaluation protocol is untouched.
 */
export const CODE_TRAVEL = 6;

export const DEMO_FILES = {
  config: 'config.json',
  metrics: 'metrics.jsonl',
  report: 'report.json',
  reportHtml: 'report.html',
  results: 'results.md',
  evalConfig: 'eval.json',
} as const;

export interface DemoOptions {
  /** The run folder (created; must not hold a run). */
  out: string;
  budget: DemoBudget;
  mode: 'full' | 'quick';
  seed: number;
  /** The repository root (configs/, default assets). */
  root: string;
  teacher: string;
  evaluator: string;
  /** The CLI scripts run for the stages (built `apps/{trainer,sampler}/dist/main.js`). */
  trainerCli: string;
  samplerCli: string;
  /** Stages run at once (child processes). */
  jobs: number;
  backend?: string;
  signal?: AbortSignal;
  onProgress?: ProgressCallback;
  /** One line per stage event (started/finished), for the user. */
  onNote?: (line: string) => void;
}

export interface StageTiming {
  stage: string;
  wallSec: number;
  /** User + system CPU of the stage's process (all its threads); null when unknown. */
  cpuSec: number | null;
  exitCode: number;
  /** Why the stage had nothing to do (e.g. a code no training prompt was routed to); it ran no process. */
  skipped?: string;
}

export interface DemoResult {
  status: 'completed' | 'failed' | 'aborted';
  runDir: string;
  timings: StageTiming[];
  /** The failing stage: its exit code (returned by the command) and log. */
  failed?: { stage: string; exitCode: number; logFile: string; tail: string };
  report?: Report;
  /** The markdown table (results.md). */
  results?: string;
  wallSec: number;
}

// ---------------------------------------------------------------------------------------------------------------
// Stages as tasks

interface StageContext {
  /** Runs one of the CLIs with `args` (cwd: the repository root); resolves on exit code 0. */
  cli(which: 'trainer' | 'sampler', args: string[], progressLabel: RegExp): Promise<void>;
}

interface Task {
  id: string;
  deps: string[];
  /** Estimated CPU seconds (progress weight). */
  cost: number;
  /** In-process work (quick file work): does not take a job slot. */
  local?: boolean;
  /** Resolves with a reason when there was nothing to do. */
  run(ctx: StageContext): Promise<void | { skipped: string }>;
}

/** Thrown (internally) when a stage's process exits non-zero. */
class StageExit extends InputError {
  constructor(
    readonly stage: string,
    readonly exitCode: number,
    readonly logFile: string,
  ) {
    super('stage failed', { code: 'E_STAGE_FAILED', field: stage, found: `exit code ${exitCode}`, file: logFile });
  }
}

/** Finds the repository root (the folder with nx.json and apps/trainer) above `start`. */
export function findRepoRoot(start: string): string | null {
  let dir = path.resolve(start);
  for (;;) {
    if (fs.existsSync(path.join(dir, 'nx.json')) && fs.existsSync(path.join(dir, 'apps', 'trainer'))) return dir;
    const up = path.dirname(dir);
    if (up === dir) return null;
    dir = up;
  }
}

function readYaml(file: string): Record<string, unknown> {
  if (!fs.existsSync(file)) throw new InputError('config file not found', { code: 'E_FILE_MISSING', file });
  return (parseYaml(fs.readFileSync(file, 'utf8')) ?? {}) as Record<string, unknown>;
}

type Json = Record<string, unknown>;
const section = (o: Json, k: string): Json => ({ ...((o[k] as Json | undefined) ?? {}) });

/** `sample_size` of a teacher folder's UNet config (the demo teacher is pixel space: the image side). */
function teacherSampleSize(teacher: string): number {
  const size = readModelUNetConfig(teacher).sampleSize;
  if (typeof size !== 'number') throw new ConfigError('the demo teacher needs a square sample_size', { file: path.join(teacher, 'unet', 'config.json'), field: 'sample_size', expected: 'one integer', found: size });
  return size;
}

/** The stage configs: the committed synthetic configs with the budget, seed and teacher applied. */
export function demoStageConfigs(o: Pick<DemoOptions, 'root' | 'budget' | 'seed' | 'teacher'>): {
  prune: PruneConfig;
  pruneRaw: Record<'aptp' | 'single-arch' | 'no-ot', Json>;
  finetuneRaw: Json;
} {
  const configs = path.join(o.root, 'apps', 'trainer', 'configs');
  const prune = readYaml(path.join(configs, 'prune.synthetic.yaml'));
  const finetune = readYaml(path.join(configs, 'finetune.synthetic.yaml'));
  const b = o.budget;
  const data = section(prune, 'data');
  // the world is rendered at the teacher's resolution (a pixel-space teacher trained at another size is not the demo's)
  const imageSize = teacherSampleSize(o.teacher);
  const base: Json = {
    ...prune,
    seed: o.seed,
    data: { ...data, dataset: { ...section(data, 'dataset'), numSamples: b.trainPrompts, imageSize }, loader: { ...section(data, 'loader'), seed: o.seed } },
    model: { ...section(prune, 'model'), pretrainedModelNameOrPath: o.teacher },
    training: {
      ...section(prune, 'training'),
      trainBatchSize: b.batchSize,
      maxTrainSteps: b.pruneSteps,
      hypernetPretrainingSteps: b.pretrainingSteps,
      logging: { ...section(section(prune, 'training'), 'logging'), checkpointingSteps: b.checkpointEvery },
    },
  };
  const ftData = section(finetune, 'data');
  const finetuneRaw: Json = {
    ...finetune,
    seed: o.seed,
    data: { ...ftData, loader: { ...section(ftData, 'loader'), seed: o.seed } },
    model: { ...section(finetune, 'model'), pretrainedModelNameOrPath: o.teacher },
    training: {
      ...section(finetune, 'training'),
      trainBatchSize: b.batchSize,
      maxTrainSteps: b.finetuneSteps,
      logging: { ...section(section(finetune, 'training'), 'logging'), checkpointingSteps: b.checkpointEvery },
    },
  };
  const training = base.training as Json;
  const optim = section(training, 'optim');
  const withOptim = (baseline: string, lrs: Json): Json => ({ ...base, baseline, training: { ...training, optim: { ...optim, ...lrs } } });
  const codesLr = CODE_TRAVEL / Math.max(1, b.pruneSteps - b.pretrainingSteps);
  const pruneRaw = {
    aptp: withOptim('none', { quantizerLearningRate: codesLr }),
    'single-arch': withOptim('singleArch', { hypernetLearningRate: CODE_TRAVEL / Math.max(1, b.pruneSteps) }),
    'no-ot': withOptim('noOt', { quantizerLearningRate: codesLr }),
  };
  const file = path.join(configs, 'prune.synthetic.yaml');
  const parsed = parsePruneConfig(pruneRaw.aptp, file);
  parsePruneConfig(pruneRaw['single-arch'], file);
  parseFinetuneConfig(finetuneRaw, path.join(configs, 'finetune.synthetic.yaml'));
  return { prune: parsed, pruneRaw, finetuneRaw };
}

/** Writes the eval prompt files and the reference images (real renders of the eval prompts). */
export async function writeEvalInputs(dir: string, prune: PruneConfig, budget: DemoBudget, seed: number): Promise<void> {
  const dataset = datasetForSplit(prune.data.dataset, 'validation', budget.evalPrompts);
  if (dataset.format !== 'synthetic') throw new ConfigError('the demo runs on the synthetic world', { field: 'data.dataset.format', expected: 'synthetic', found: dataset.format });
  const world = new SyntheticWorld(dataset);
  fs.mkdirSync(path.join(dir, 'prompts'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'reference'), { recursive: true });
  const pad = String(budget.evalPrompts - 1).length;
  const sampling: string[] = [];
  const truth: string[] = [];
  for (let i = 0; i < budget.evalPrompts; i++) {
    const s = world.sample('validation', i);
    sampling.push(JSON.stringify({ prompt: s.caption, seed: seed + i }));
    truth.push(JSON.stringify({ index: i, prompt: s.caption, category: s.attributes.category, attributes: s.attributes }));
    fs.writeFileSync(path.join(dir, 'reference', `${String(i).padStart(pad, '0')}.png`), await encodePng(s.image));
  }
  fs.writeFileSync(path.join(dir, 'prompts', 'eval.jsonl'), `${sampling.join('\n')}\n`);
  fs.writeFileSync(path.join(dir, 'prompts', 'eval-attributes.jsonl'), `${truth.join('\n')}\n`);
}

/** One line of a sampler folder's manifest.jsonl (the fields the demo reads). */
interface ManifestRow {
  index: number;
  file: string;
  prompt: string;
  expert: number | string;
  macsRatio?: unknown;
}

function readManifest(samplesDir: string): { file: string; rows: ManifestRow[] } {
  const file = path.join(samplesDir, 'manifest.jsonl');
  const rows = fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as ManifestRow);
  return { file, rows };
}

/** Contact sheets of a sample folder: one per expert (or one for all), images with their prompts. */
async function writeGrids(samplesDir: string, gridsDir: string, name: string, perExpert: boolean, maxTiles = 32): Promise<void> {
  const rows = readManifest(samplesDir).rows.sort((a, b) => a.index - b.index);
  const groups = new Map<string, typeof rows>();
  for (const r of rows) {
    const key = perExpert ? `${name}-expert-${r.expert}` : name;
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  fs.mkdirSync(gridsDir, { recursive: true });
  for (const [key, group] of groups) {
    const tiles = await Promise.all(group.slice(0, maxTiles).map(async (r) => ({ image: await loadRgbImage(path.join(samplesDir, r.file)), caption: r.prompt })));
    await writeContactSheet(path.join(gridsDir, `${key}.png`), tiles);
  }
}

/** The demo's stages, in priority order: the three pruning runs first (the longest), then the APTP chain. */
function demoTasks(o: DemoOptions, dirs: ReturnType<typeof runDirs>, prune: PruneConfig): Task[] {
  const K = prune.model.router.numCodes;
  const b = o.budget;
  const backend = o.backend ? ['--backend', o.backend] : [];
  const pruneCost = COST.process + b.pruneSteps * COST.pruneStep;
  const ftCost = COST.process + b.finetuneSteps * COST.finetuneStep;
  const sampleCost = COST.process + b.evalPrompts * (b.sampleSteps + 1) * COST.imageStep * (b.guidance > 1 ? 1 : 0.5);
  const pruneTask = (id: string, run: string, config: string): Task => ({
    id,
    deps: [],
    cost: pruneCost,
    run: (c) => c.cli('trainer', ['prune', '--config', config, '--out', run, ...backend], /^prune/),
  });
  // claim (a) compares at the same average MACs: the single architecture is exported at APTP's average over the
  // eval prompts as the sampler routed them (each prompt alone; `route` uses the reference's batch noise stream)
  const singleArchTask = (id: string, run: string, config: string): Task => {
    const plain = pruneTask(id, run, config);
    return {
      ...plain,
      deps: ['sample-aptp'],
      run: (c) => {
        const cfg = JSON.parse(fs.readFileSync(config, 'utf8')) as Json;
        writeJsonAtomic(config, { ...cfg, singleArchMacsRatio: sampledMacsRatio(dirs.samples('aptp')) });
        return plain.run(c);
      },
    };
  };
  const route = (id: string, dep: string, run: string): Task => ({
    id,
    deps: [dep],
    cost: COST.route,
    run: (c) => c.cli('trainer', ['route', '--prune', run, '--split', 'train', ...backend], /^route/),
  });
  const finetune = (id: string, dep: string, run: string, out: string, k: number): Task => ({
    id,
    deps: [dep],
    cost: ftCost,
    async run(c) {
      // a code no training prompt was routed to has nothing to fine-tune on: it is sliced, not trained (assembleModel)
      if ((readRouting(path.join(run, 'routing-train.json')).counts[k] ?? 0) === 0) return { skipped: `no training prompt was routed to code ${k}` };
      await c.cli('trainer', ['finetune', '--prune', run, '--config', dirs.finetuneConfig, '--expert', String(k), '--out', out, ...backend], /^expert/);
    },
  });
  const tuned = (out: string, n: number): Array<string | null> =>
    Array.from({ length: n }, (_, k) => {
      const d = path.join(out, `expert-${k}`, 'unet');
      return fs.existsSync(path.join(d, 'config.json')) ? d : null;
    });
  const sample = (id: string, dep: string, model: string, out: string, extra: string[]): Task => ({
    id,
    deps: ['prepare', dep],
    cost: sampleCost,
    run: (c) =>
      c.cli(
        'sampler',
        ['sample', '--model-dir', model, '--prompts-file', dirs.promptsFile, '--out', out, '--scheduler', b.scheduler, '--steps', String(b.sampleSteps), '--guidance', String(b.guidance), '--batch-size', String(b.sampleBatchSize), '--seed', String(o.seed), ...extra, ...backend],
        /^batch/,
      ),
  });
  const aptpFt = Array.from({ length: K }, (_, k) => `finetune-aptp-${k}`);
  return [
    { id: 'prepare', deps: [], cost: 1, local: true, run: () => writeEvalInputs(dirs.root, prune, b, o.seed) },
    pruneTask('prune-aptp', dirs.pruneAptp, dirs.pruneConfig('aptp')),
    singleArchTask('prune-single-arch', dirs.pruneSingle, dirs.pruneConfig('single-arch')),
    pruneTask('prune-no-ot', dirs.pruneNoOt, dirs.pruneConfig('no-ot')),
    route('route-aptp', 'prune-aptp', dirs.pruneAptp),
    ...aptpFt.map((id, k) => finetune(id, 'route-aptp', dirs.pruneAptp, dirs.ftAptp, k)),
    route('route-single-arch', 'prune-single-arch', dirs.pruneSingle),
    finetune('finetune-single-arch', 'route-single-arch', dirs.pruneSingle, dirs.ftSingle, 0),
    { id: 'model-teacher', deps: [], cost: COST.assemble, local: true, run: async () => void assembleModel({ out: dirs.model('teacher'), teacher: o.teacher, onnx: true }) },
    sample('sample-teacher', 'model-teacher', dirs.model('teacher'), dirs.samples('teacher'), ['--full']),
    route('route-no-ot', 'prune-no-ot', dirs.pruneNoOt),
    {
      id: 'model-aptp',
      deps: aptpFt,
      cost: COST.assemble,
      local: true,
      run: async () => void assembleModel({ out: dirs.model('aptp'), teacher: o.teacher, pruneRun: dirs.pruneAptp, finetuned: tuned(dirs.ftAptp, K), onnx: true, onNote: o.onNote }),
    },
    sample('sample-aptp', 'model-aptp', dirs.model('aptp'), dirs.samples('aptp'), []),
    {
      id: 'model-single-arch',
      deps: ['finetune-single-arch'],
      cost: COST.assemble,
      local: true,
      run: async () => void assembleModel({ out: dirs.model('single-arch'), teacher: o.teacher, pruneRun: dirs.pruneSingle, finetuned: tuned(dirs.ftSingle, 1), onnx: true, onNote: o.onNote }),
    },
    sample('sample-single-arch', 'model-single-arch', dirs.model('single-arch'), dirs.samples('single-arch'), []),
    {
      id: 'grids',
      deps: ['sample-aptp', 'sample-single-arch', 'sample-teacher'],
      cost: 1,
      local: true,
      async run() {
        await writeGrids(dirs.samples('aptp'), dirs.grids, 'aptp', true);
        await writeGrids(dirs.samples('single-arch'), dirs.grids, 'single-arch', false);
        await writeGrids(dirs.samples('teacher'), dirs.grids, 'teacher', false);
      },
    },
    {
      id: 'eval',
      deps: ['prepare', 'sample-aptp', 'sample-single-arch', 'sample-teacher', 'route-aptp', 'route-no-ot'],
      cost: COST.process + COST.eval,
      async run(c) {
        writeJsonAtomic(dirs.evalConfig, evalConfig(o, dirs));
        await c.cli('sampler', ['eval', '--config', dirs.evalConfig, ...backend], /^variants/);
      },
    },
  ];
}

/** The mean MACs ratio (UNet call / teacher) over the images of a sampler folder (routed experts' ratios). */
function sampledMacsRatio(samplesDir: string): number {
  const { file, rows } = readManifest(samplesDir);
  const ratios = rows.map((r) => r.macsRatio);
  if (ratios.length === 0 || !ratios.every((r): r is number => typeof r === 'number' && r > 0)) {
    throw new InputError('no MACs ratio per image in the sample manifest', { code: 'E_FORMAT', file, field: 'macsRatio', expected: 'a positive number on every line' });
  }
  return ratios.reduce((a, b) => a + b, 0) / ratios.length;
}

function runDirs(root: string) {
  return {
    root,
    configs: path.join(root, 'configs'),
    pruneConfig: (name: string) => path.join(root, 'configs', `prune-${name}.json`),
    finetuneConfig: path.join(root, 'configs', 'finetune.json'),
    promptsFile: path.join(root, 'prompts', 'eval.jsonl'),
    attributesFile: path.join(root, 'prompts', 'eval-attributes.jsonl'),
    reference: path.join(root, 'reference'),
    pruneAptp: path.join(root, 'prune', 'aptp'),
    pruneSingle: path.join(root, 'prune', 'single-arch'),
    pruneNoOt: path.join(root, 'prune', 'no-ot'),
    ftAptp: path.join(root, 'finetune', 'aptp'),
    ftSingle: path.join(root, 'finetune', 'single-arch'),
    model: (name: string) => path.join(root, 'models', name),
    samples: (name: string) => path.join(root, 'samples', name),
    grids: path.join(root, 'grids'),
    logs: path.join(root, 'logs'),
    evalConfig: path.join(root, DEMO_FILES.evalConfig),
  };
}

/** The sampler `eval` config: the three variants, the prompts' ground truth, the reference, code usage. */
function evalConfig(o: DemoOptions, dirs: ReturnType<typeof runDirs>): Json {
  const withOt = readRouting(path.join(dirs.pruneAptp, 'routing-train.json')).counts;
  const withoutOt = readRouting(path.join(dirs.pruneNoOt, 'routing-train.json')).counts;
  return {
    variants: [
      { id: 'aptp', kind: 'aptp', name: `APTP (${withOt.length} experts, routed)`, samples: dirs.samples('aptp'), modelDir: dirs.model('aptp') },
      { id: 'single-arch', kind: 'singleArchitecture', samples: dirs.samples('single-arch'), modelDir: dirs.model('single-arch') },
      { id: 'teacher', kind: 'teacher', samples: dirs.samples('teacher'), modelDir: dirs.model('teacher') },
    ],
    prompts: dirs.attributesFile,
    reference: dirs.reference,
    evaluator: o.evaluator,
    codeUsage: { withOt, withoutOt },
    run: {
      title: `APTP on the synthetic world (${o.mode} demo, seed ${o.seed})`,
      command: `aptp-trainer demo${o.mode === 'quick' ? ' --quick' : ''} --seed ${o.seed}`,
      runDir: dirs.root,
      seeds: { demo: o.seed, world: 0 },
      config: { mode: o.mode, budget: o.budget, teacher: o.teacher },
      notes: [
        `eval prompts: rows 0–${o.budget.evalPrompts - 1} of the world's validation split (never trained on); reference = real renders of the same prompts`,
        `code usage: prompts per code when routing ${o.budget.trainPrompts} training prompts (cosine argmax, APTP.md §2.5) with the router trained with OT (APTP) and without (noOt baseline, otherwise identical)`,
      ],
    },
    out: dirs.root,
    images: 'embed',
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Running

/** `node --require <this>`: the stage process writes its own CPU usage (all threads) when it exits. */
const CPU_PRELOAD = `process.on('exit', () => { const f = process.env.APTP_DEMO_CPU_FILE; if (!f) return; const u = process.cpuUsage(); require('node:fs').writeFileSync(f, JSON.stringify({ cpuSec: (u.user + u.system) / 1e6 })); });\n`;

const PROGRESS_LINE = /^(.*?): (\d+)\/(\d+) +\d+% /;

/** Fraction done of a plain progress line (`label: done/total …`), composing `batch i/n` labels of the sampler. */
export function progressFraction(line: string, label: RegExp): number | null {
  const m = PROGRESS_LINE.exec(line);
  if (!m || !label.test(m[1]!)) return null;
  const f = Number(m[3]) > 0 ? Number(m[2]) / Number(m[3]) : 0;
  const batch = /batch (\d+)\/(\d+)/.exec(m[1]!);
  return batch ? (Number(batch[1]) - 1 + f) / Number(batch[2]) : f;
}

/** Runs the demo (see the file comment). Returns instead of throwing when a stage process fails. */
export async function runDemo(o: DemoOptions): Promise<DemoResult> {
  const started = Date.now();
  const root = path.resolve(o.out);
  if (fs.existsSync(root) && fs.readdirSync(root).length > 0) throw new InputError('run folder is not empty', { code: 'E_OUT_EXISTS', file: root, expected: 'a new or empty folder' });
  for (const [file, what, how] of [
    [path.join(o.teacher, 'unet', 'config.json'), 'teacher', 'aptp-trainer teacher --config apps/trainer/configs/teacher.synthetic.json --export apps/trainer/assets/teacher'],
    [path.join(o.evaluator, 'model.safetensors'), 'evaluator', 'aptp-trainer evaluator'],
    [o.trainerCli, 'trainer CLI', 'npx nx run-many -t build -p trainer sampler'],
    [o.samplerCli, 'sampler CLI', 'npx nx run-many -t build -p trainer sampler'],
  ] as const) {
    if (!fs.existsSync(file)) throw new InputError(`${what} not found`, { code: 'E_FILE_MISSING', file, expected: `the file (make it with: ${how})` });
  }
  const dirs = runDirs(root);
  fs.mkdirSync(dirs.logs, { recursive: true });
  fs.mkdirSync(dirs.configs, { recursive: true });
  const { prune, pruneRaw, finetuneRaw } = demoStageConfigs(o);
  const K = prune.model.router.numCodes;
  for (const [name, cfg] of Object.entries(pruneRaw)) writeJsonAtomic(dirs.pruneConfig(name), cfg);
  writeJsonAtomic(dirs.finetuneConfig, finetuneRaw);
  writeJsonAtomic(path.join(root, DEMO_FILES.config), {
    command: 'demo',
    mode: o.mode,
    seed: o.seed,
    budget: o.budget,
    teacher: path.resolve(o.teacher),
    evaluator: path.resolve(o.evaluator),
    jobs: o.jobs,
    backend: o.backend ?? process.env.APTP_BACKEND ?? null,
    numCodes: K,
    pruningTarget: prune.training.losses.resourceLoss.pruningTarget,
    stages: { prune: pruneRaw, finetune: finetuneRaw },
  });
  const preload = path.join(dirs.logs, 'cpu-usage.cjs');
  fs.writeFileSync(preload, CPU_PRELOAD);

  const tasks = demoTasks(o, dirs, prune);
  const total = tasks.reduce((s, t) => s + t.cost, 0);
  const fraction = new Map<string, number>();
  const running = new Set<string>();
  const timings: StageTiming[] = [];
  const children = new Set<ReturnType<typeof spawn>>();
  const stop = new AbortController();
  const onAbort = (): void => stop.abort();
  o.signal?.addEventListener('abort', onAbort);
  if (o.signal?.aborted) stop.abort();
  // a stage process saves and exits on SIGINT (the terminal sends it to the whole process group; forward it otherwise)
  stop.signal.addEventListener('abort', () => {
    for (const c of children) c.kill('SIGINT');
  });
  // if this process exits early (a second signal), no stage outlives it (their checkpoints are atomic: kill is safe)
  const killAll = (): void => {
    for (const c of children) c.kill('SIGKILL');
  };
  process.on('exit', killAll);
  const metricsFd = fs.openSync(path.join(root, DEMO_FILES.metrics), 'a');

  const report = (): void => {
    const done = tasks.reduce((s, t) => s + t.cost * (fraction.get(t.id) ?? 0), 0);
    const now = [...running].map((id) => `${id} ${Math.round(100 * (fraction.get(id) ?? 0))}%`).join(', ');
    o.onProgress?.({ label: 'demo', done: Math.round(done), total: Math.round(total), info: now ? { running: now } : undefined });
  };

  const cli = (task: string) => (which: 'trainer' | 'sampler', args: string[], label: RegExp): Promise<void> =>
    new Promise((resolve, reject) => {
      const logFile = path.join(dirs.logs, `${task}.log`);
      const log = fs.openSync(logFile, 'a');
      const cpuFile = path.join(dirs.logs, `${task}.cpu.json`);
      const script = which === 'trainer' ? o.trainerCli : o.samplerCli;
      fs.writeSync(log, `$ aptp-${which} ${args.join(' ')}\n`);
      const child = spawn(process.execPath, ['--require', preload, script, ...args], { cwd: o.root, env: { ...process.env, APTP_DEMO_CPU_FILE: cpuFile }, stdio: ['ignore', 'pipe', 'pipe'] });
      children.add(child);
      let partial = '';
      const onData = (chunk: Buffer): void => {
        fs.writeSync(log, chunk);
        const lines = (partial + chunk.toString()).split('\n');
        partial = lines.pop()!;
        for (const line of lines) {
          const f = progressFraction(line, label);
          if (f !== null && f > (fraction.get(task) ?? 0)) {
            fraction.set(task, Math.min(0.99, f));
            report();
          }
        }
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.on('error', (err) => {
        children.delete(child);
        fs.closeSync(log);
        reject(new InputError('cannot start the stage process', { code: 'E_SPAWN', file: script, cause: err }));
      });
      child.on('close', (code, sig) => {
        children.delete(child);
        fs.closeSync(log);
        const exitCode = code ?? (sig === 'SIGINT' ? 130 : 143);
        if (exitCode === 0) resolve();
        else reject(new StageExit(task, exitCode, logFile));
      });
    });

  const cpuOf = (task: string): number | null => {
    try {
      return (JSON.parse(fs.readFileSync(path.join(dirs.logs, `${task}.cpu.json`), 'utf8')) as { cpuSec: number }).cpuSec;
    } catch {
      return null;
    }
  };

  let failure: DemoResult['failed'];
  const finished = new Set<string>();
  const startedTasks = new Set<string>();
  const inFlight = new Map<string, Promise<{ id: string; error?: unknown }>>();
  const start = (t: Task): void => {
    startedTasks.add(t.id);
    running.add(t.id);
    const t0 = Date.now();
    const cpu0 = process.cpuUsage();
    o.onNote?.(`started ${t.id}`);
    report();
    inFlight.set(
      t.id,
      t.run({ cli: cli(t.id) }).then(
        (outcome) => {
          const u = process.cpuUsage(cpu0);
          const skipped = outcome ? outcome.skipped : undefined;
          const cpuSec = skipped !== undefined ? null : t.local ? (u.user + u.system) / 1e6 : cpuOf(t.id);
          const timing: StageTiming = { stage: t.id, wallSec: (Date.now() - t0) / 1000, cpuSec, exitCode: 0, ...(skipped !== undefined ? { skipped } : {}) };
          timings.push(timing);
          fs.writeSync(metricsFd, `${JSON.stringify(timing)}\n`);
          return { id: t.id };
        },
        (error: unknown) => ({ id: t.id, error }),
      ),
    );
  };
  try {
    for (;;) {
      if (!stop.signal.aborted && failure === undefined) {
        for (const t of tasks) {
          if (startedTasks.has(t.id) || !t.deps.every((d) => finished.has(d))) continue;
          const busy = [...running].filter((id) => !tasks.find((x) => x.id === id)!.local).length;
          if (!t.local && busy >= o.jobs) continue;
          start(t);
        }
      }
      if (inFlight.size === 0) break;
      const r = await Promise.race(inFlight.values());
      inFlight.delete(r.id);
      running.delete(r.id);
      if (r.error === undefined) {
        finished.add(r.id);
        fraction.set(r.id, 1);
        const t = timings.find((x) => x.stage === r.id)!;
        o.onNote?.(t.skipped !== undefined ? `skipped ${r.id}: ${t.skipped}` : `finished ${r.id} in ${t.wallSec.toFixed(1)} s${t.cpuSec !== null ? ` (CPU ${t.cpuSec.toFixed(1)} s)` : ''}`);
        report();
        continue;
      }
      if (failure !== undefined || stop.signal.aborted) continue; // already stopping: later exits are consequences
      if (r.error instanceof StageExit) {
        const tail = fs.readFileSync(r.error.logFile, 'utf8').split('\n').slice(-15).join('\n');
        failure = { stage: r.id, exitCode: r.error.exitCode, logFile: r.error.logFile, tail };
        timings.push({ stage: r.id, wallSec: 0, cpuSec: cpuOf(r.id), exitCode: r.error.exitCode });
        fs.writeSync(metricsFd, `${JSON.stringify({ stage: r.id, exitCode: r.error.exitCode })}\n`);
        for (const c of children) c.kill('SIGTERM');
      } else {
        for (const c of children) c.kill('SIGTERM');
        await Promise.all(inFlight.values());
        throw r.error;
      }
    }
  } finally {
    o.signal?.removeEventListener('abort', onAbort);
    process.off('exit', killAll);
    fs.closeSync(metricsFd);
  }
  const wallSec = (Date.now() - started) / 1000;
  if (stop.signal.aborted && finished.size < tasks.length) return { status: 'aborted', runDir: root, timings, wallSec };
  if (failure) return { status: 'failed', runDir: root, timings, failed: failure, wallSec };

  const rep = JSON.parse(fs.readFileSync(path.join(root, DEMO_FILES.report), 'utf8')) as Report;
  const results = formatResults(rep, {
    mode: o.mode,
    seed: o.seed,
    budget: o.budget,
    pruningTarget: prune.training.losses.resourceLoss.pruningTarget,
    trainRouted: readRouting(path.join(dirs.pruneAptp, 'routing-train.json')).counts,
    finetuned: readExperts(dirs.pruneAptp).experts.map((e) => fs.existsSync(path.join(dirs.ftAptp, `expert-${e.code}`, 'unet', 'config.json'))),
  });
  fs.writeFileSync(path.join(root, DEMO_FILES.results), results);
  return { status: 'completed', runDir: root, timings, report: rep, results, wallSec };
}

// ---------------------------------------------------------------------------------------------------------------
// The results table (README "Demo" section; filled by copying results.md)

export interface ResultsContext {
  mode: 'full' | 'quick';
  seed: number;
  budget: DemoBudget;
  pruningTarget: number;
  /** Training prompts routed to each APTP expert (its fine-tuning data). */
  trainRouted: number[];
  /** Whether each APTP expert was fine-tuned (false: no training prompt routed to it; sliced only). */
  finetuned: boolean[];
}

const ADHERENCE_ATTRIBUTE_ORDER: readonly AdherenceAttribute[] = ['category', 'shape', 'color', 'size', 'position', 'count', 'relation', 'text', 'background'];
const pct = (r: ReportRatio | undefined | null): string => (r && r.ratio !== null ? `${formatNumber(100 * r.ratio, 3)} %` : '–');
const ratio = (x: number | null | undefined): string => (x === null || x === undefined ? '–' : x.toFixed(3));

/** The markdown results: (a) quality vs baselines and teacher, (b) MACs per category, (c) code usage, claims as tested. */
export function formatResults(r: Report, c: ResultsContext): string {
  const b = c.budget;
  const cats = r.categories.map((x) => x.name);
  const teacherMacs = r.summary.teacherMacs;
  const main = r.variants.filter((v) => v.kind !== 'expert');
  const lines: string[] = [];
  lines.push(`### Results (${c.mode} demo, seed ${c.seed})`);
  lines.push('');
  lines.push(
    `K = ${r.experts.length} experts, target p = ${c.pruningTarget}; prune ${b.pruneSteps} steps (${b.pretrainingSteps} hypernet pre-training), fine-tune ${b.finetuneSteps} steps per expert, batch ${b.batchSize}; ` +
      `${b.evalPrompts} eval prompts (validation split), ${b.scheduler.toUpperCase()} ${b.sampleSteps} steps, CFG ${b.guidance}; distances on the synthetic evaluator's features vs real renders of the same prompts.`,
  );
  lines.push('');
  lines.push('**(a) Quality: APTP vs the single-architecture baseline (same p) and the full teacher**');
  lines.push('');
  lines.push(`| model | mean MACs / UNet call | vs teacher | FID-style ↓ | CMMD-style ↓ | adherence ↑ | ${cats.join(' | ')} |`);
  lines.push(`|---|---|---|---|---|---|${cats.map(() => '---|').join('')}`);
  for (const v of main) {
    lines.push(`| ${v.name} | ${formatMacs(v.meanMacs)} | ${ratio(v.macsRatioToTeacher)} | ${formatNumber(v.fid)} | ${formatNumber(v.cmmd)} | ${formatRatio(v.adherence?.overall)} | ${cats.map((k) => pct(v.adherence?.perCategory[k])).join(' | ')} |`);
  }
  lines.push('');
  // strict adherence needs every stated attribute right; the per-attribute shares show which ones a model gets
  const attrs = ADHERENCE_ATTRIBUTE_ORDER.filter((a) => main.some((v) => v.adherence?.perAttribute[a]));
  if (attrs.length > 0) {
    lines.push('Per stated attribute (share of the prompts stating it whose image the evaluator reads as stated):');
    lines.push('');
    lines.push(`| model | ${attrs.join(' | ')} |`);
    lines.push(`|---|${attrs.map(() => '---|').join('')}`);
    for (const v of main) lines.push(`| ${v.name} | ${attrs.map((a) => pct(v.adherence?.perAttribute[a])).join(' | ')} |`);
    lines.push('');
  }
  lines.push('**(b) MACs per prompt category (APTP routing of the eval prompts)**');
  lines.push('');
  lines.push(`| category | prompts | mean MACs | vs teacher | prompts per expert (${r.experts.map((e) => e.id).join('/')}) | adherence |`);
  lines.push('|---|---|---|---|---|---|');
  for (const k of r.categories) {
    lines.push(`| ${k.name} | ${k.prompts} | ${formatMacs(k.meanMacs)} | ${ratio(teacherMacs ? k.meanMacs / teacherMacs : null)} | ${k.expertCounts.join('/')} | ${formatRatio(k.adherence)} |`);
  }
  lines.push('');
  lines.push('| expert | MACs | vs teacher | parameters | train prompts routed | fine-tuned | eval prompts routed | adherence |');
  lines.push('|---|---|---|---|---|---|---|---|');
  for (const e of r.experts) {
    const v = r.variants.find((x) => x.kind === 'expert' && x.expert === e.id);
    lines.push(`| ${e.id} | ${formatMacs(e.macs)} | ${ratio(e.macsRatio)} | ${e.params} | ${c.trainRouted[e.id] ?? 0} | ${c.finetuned[e.id] ? 'yes' : 'no (sliced only)'} | ${e.promptsRouted} | ${formatRatio(v?.adherence?.overall)} |`);
  }
  lines.push('');
  lines.push(`**(c) Code usage: ${b.trainPrompts} training prompts routed after pruning, with and without optimal transport**`);
  lines.push('');
  lines.push('| router | prompts per code | codes used | normalised entropy | max share |');
  lines.push('|---|---|---|---|---|');
  for (const [name, s] of [['with OT (APTP)', r.codeUsage.withOt], ['without OT', r.codeUsage.withoutOt]] as const) {
    const st: CodeUsageStats | null = s;
    lines.push(st ? `| ${name} | ${st.counts.join('/')} | ${st.codesUsed}/${st.counts.length} | ${st.normalizedEntropy.toFixed(3)} | ${st.maxShare.toFixed(3)} |` : `| ${name} | – | – | – | – |`);
  }
  lines.push('');
  lines.push(
    "**Claims as tested** (computed by @aptp/eval from the numbers above; result = the strict comparison; p = how often a gap this large arises between models that do not differ: Fisher's exact test on adherence counts, a permutation test on per-prompt MACs; distances and entropies have no p)",
  );
  lines.push('');
  lines.push('| | claim | result | comparison |');
  lines.push('|---|---|---|---|');
  const group = { quality: '(a)', macsByCategory: '(b)', codeUsage: '(c)' } as const;
  for (const cl of r.claims) lines.push(`| ${group[cl.group]} | ${cl.claim} | **${cl.status}** | ${cl.comparison.replace(/\|/g, '\\|')} |`);
  lines.push('');
  return lines.join('\n');
}
