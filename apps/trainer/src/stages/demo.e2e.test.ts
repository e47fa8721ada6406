import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { runProgram } from '@aptp/core';
import { formatNumber, type Report } from '@aptp/eval';
import { trainerProgram } from '../program';
import { readMetrics } from '../runDir';
import { DEMO_BUDGETS, findRepoRoot, formatResults, progressFraction } from './demo';

/**
 * `aptp-trainer demo --quick` end to end (issue 11): the committed teacher and evaluator, every stage as the built
 * CLIs run it (apps/{trainer,sampler}/dist: the nx `test` target builds them first), one run folder, the results
 * table. The numbers of a quick run mean nothing (6 pruning steps); what is checked is that every stage ran, wrote
 * what the next one reads, and that the table and report agree with the files.
 */
const root = findRepoRoot(__dirname)!;
const CLIS = ['apps/trainer/dist/main.js', 'apps/sampler/dist/main.js'].map((f) => path.join(root, f));
const Q = DEMO_BUDGETS.quick;

function sink(): { stream: Writable; text: () => string } {
  let buf = '';
  return { stream: new Writable({ write(c, _e, cb) { buf += c.toString(); cb(); } }), text: () => buf };
}

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const o = sink();
  const e = sink();
  const code = await runProgram(trainerProgram, args, { out: o.stream, err: e.stream });
  return { code, out: o.text(), err: e.text() };
}

const jsonl = (file: string): Record<string, unknown>[] =>
  fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as Record<string, unknown>);

describe('aptp-trainer demo --quick', () => {
  let tmp: string;
  let run: string;
  let result: { code: number; out: string; err: string };

  beforeAll(async () => {
    for (const f of CLIS) if (!fs.existsSync(f)) throw new Error(`${f} is missing: the demo runs the built CLIs (npx nx run-many -t build -p trainer sampler)`);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'aptp-demo-e2e-'));
    run = path.join(tmp, 'run');
    result = await cli(['demo', '--quick', '--out', run]);
  }, 900_000);
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('completes and prints the results table, the report and the run folder last', () => {
    if (result.code !== 0) throw new Error(`demo exited ${result.code}:\n${result.err.slice(-3000)}`);
    const lines = result.out.trimEnd().split('\n');
    expect(lines[lines.length - 1]).toBe(run);
    expect(result.out).toContain(`report: ${path.join(run, 'report.html')}`);
    const results = fs.readFileSync(path.join(run, 'results.md'), 'utf8');
    expect(result.out).toContain(results.trim());
    expect(result.err).toMatch(/demo: \d+\/\d+ +\d+% /); // the progress bar (plain lines off a TTY)
  });

  it('ran every stage once, each logged with its wall and CPU time', () => {
    const stages = readMetrics(path.join(run, 'metrics.jsonl'));
    const ids = stages.map((s) => s.stage as string).sort();
    expect(ids).toEqual(
      [
        'prepare', 'model-teacher', 'sample-teacher', 'grids', 'eval',
        ...['aptp', 'single-arch', 'no-ot'].flatMap((n) => [`prune-${n}`, `route-${n}`]),
        'finetune-aptp-0', 'finetune-aptp-1', 'finetune-aptp-2', 'finetune-aptp-3', 'finetune-single-arch',
        'model-aptp', 'model-single-arch', 'sample-aptp', 'sample-single-arch',
      ].sort(),
    );
    const routed = (JSON.parse(fs.readFileSync(path.join(run, 'prune', 'aptp', 'routing-train.json'), 'utf8')) as { counts: number[] }).counts;
    for (const s of stages) {
      expect(s.exitCode).toBe(0);
      if (s.skipped !== undefined) {
        // only an expert no training prompt was routed to is skipped (it is sliced, not fine-tuned)
        const k = /^finetune-aptp-(\d+)$/.exec(s.stage as string);
        expect(k).not.toBeNull();
        expect(routed[Number(k![1])]).toBe(0);
        expect(s.cpuSec).toBeNull();
        expect(result.err).toContain(`skipped ${s.stage as string}: no training prompt was routed to code ${k![1]}`);
        continue;
      }
      expect(s.wallSec as number).toBeGreaterThan(0);
      expect(s.cpuSec as number).toBeGreaterThan(0);
    }
    for (const [k, n] of routed.entries()) {
      expect(stages.find((s) => s.stage === `finetune-aptp-${k}`)!.skipped !== undefined).toBe(n === 0);
    }
    for (const s of stages.filter((x) => /^(prune|finetune|sample|route|eval)/.test(x.stage as string) && fs.existsSync(path.join(run, 'logs', `${x.stage}.log`)))) {
      expect(fs.readFileSync(path.join(run, 'logs', `${s.stage}.log`), 'utf8')).toMatch(/^\$ aptp-(trainer|sampler) /);
    }
  });

  it('pruned with K = 4, p = 0.6 and the three runs the claims need, each a complete training run', () => {
    const cfg = JSON.parse(fs.readFileSync(path.join(run, 'config.json'), 'utf8'));
    expect(cfg).toMatchObject({ mode: 'quick', seed: 43, numCodes: 4, pruningTarget: 0.6, budget: Q });
    for (const [name, baseline, K] of [['aptp', 'none', 4], ['single-arch', 'singleArch', 1], ['no-ot', 'noOt', 4]] as const) {
      const dir = path.join(run, 'prune', name);
      expect(JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'))).toMatchObject({ seed: 43, baseline, training: { maxTrainSteps: Q.pruneSteps, trainBatchSize: Q.batchSize } });
      const m = readMetrics(path.join(dir, 'metrics.jsonl'));
      expect(m.map((x) => x.step)).toEqual(Array.from({ length: Q.pruneSteps }, (_, i) => i + 1));
      expect(fs.readFileSync(path.join(dir, 'latest'), 'utf8').trim()).toBe(`checkpoint-${Q.pruneSteps}`);
      const experts = JSON.parse(fs.readFileSync(path.join(dir, 'experts.json'), 'utf8'));
      expect(experts.experts).toHaveLength(K);
      const routing = JSON.parse(fs.readFileSync(path.join(dir, 'routing-train.json'), 'utf8'));
      expect(routing.counts.reduce((a: number, b: number) => a + b, 0)).toBe(Q.trainPrompts);
    }
    // claim (a) at the same average MACs: the single architecture was exported at APTP's mean over the eval images
    const aptp = jsonl(path.join(run, 'samples/aptp/manifest.jsonl')) as Array<{ macsRatio: number }>;
    const average = aptp.reduce((a, e) => a + e.macsRatio, 0) / aptp.length;
    const single = JSON.parse(fs.readFileSync(path.join(run, 'prune/single-arch/experts.json'), 'utf8'));
    expect(single.macsMatch.target).toBeCloseTo(average, 12);
    expect(single.experts[0].macsRatio).toBeCloseTo(single.macsMatch.macsRatio, 12);
  });

  it('fine-tuned every expert with routed prompts and assembled loadable model folders with ONNX exports', () => {
    const routing = JSON.parse(fs.readFileSync(path.join(run, 'prune/aptp/routing-train.json'), 'utf8')) as { counts: number[] };
    const index = JSON.parse(fs.readFileSync(path.join(run, 'models/aptp/model_index.json'), 'utf8'));
    routing.counts.forEach((n, k) => {
      const tuned = path.join(run, 'finetune/aptp', `expert-${k}`, 'unet');
      expect(fs.existsSync(tuned)).toBe(n > 0);
      if (n > 0) expect(readMetrics(path.join(run, 'finetune/aptp', `expert-${k}`, 'metrics.jsonl'))).toHaveLength(Q.finetuneSteps);
      expect(index._aptp.experts[k]).toMatchObject({ code: k, source: n > 0 ? 'finetuned' : 'sliced' });
      for (const f of ['config.json', 'diffusion_pytorch_model.safetensors', 'onnx/model.onnx']) expect(fs.existsSync(path.join(run, 'models/aptp/experts', String(k), f))).toBe(true);
    });
    for (const m of ['aptp', 'single-arch', 'teacher']) {
      for (const f of ['unet/config.json', 'unet/onnx/model.onnx', 'scheduler/scheduler_config.json', 'conditioning/config.json']) expect(fs.existsSync(path.join(run, 'models', m, f))).toBe(true);
    }
    expect(JSON.parse(fs.readFileSync(path.join(run, 'models/aptp/prompt_encoder/config.json'), 'utf8'))).toEqual({ _class_name: 'SyntheticPromptEncoder', dim: 768, seed: 0 });
    expect(fs.existsSync(path.join(run, 'models/teacher/router'))).toBe(false);
  });

  it('sampled the same eval prompts with the same seeds for APTP, the baseline and the teacher', () => {
    const prompts = jsonl(path.join(run, 'prompts/eval.jsonl'));
    expect(prompts).toHaveLength(Q.evalPrompts);
    expect(fs.readdirSync(path.join(run, 'reference'))).toHaveLength(Q.evalPrompts);
    for (const m of ['aptp', 'single-arch', 'teacher']) {
      const rows = jsonl(path.join(run, 'samples', m, 'manifest.jsonl')).sort((a, b) => (a.index as number) - (b.index as number));
      expect(rows.map((r) => [r.prompt, r.seed, r.steps, r.guidance])).toEqual(prompts.map((p) => [p.prompt, p.seed, Q.sampleSteps, Q.guidance]));
      expect(rows.every((r) => (m === 'teacher' ? r.expert === 'full' : typeof r.expert === 'number'))).toBe(true);
      for (const r of rows) expect(fs.existsSync(path.join(run, 'samples', m, r.file as string))).toBe(true);
    }
    const grids = fs.readdirSync(path.join(run, 'grids'));
    expect(grids).toEqual(expect.arrayContaining(['single-arch.png', 'teacher.png']));
    const aptpExperts = new Set(jsonl(path.join(run, 'samples/aptp/manifest.jsonl')).map((r) => r.expert));
    expect(grids.filter((g) => g.startsWith('aptp-expert-')).sort()).toEqual([...aptpExperts].map((e) => `aptp-expert-${e}.png`).sort());
  });

  it('report.json holds the three variants and the claims; results.md is the table of exactly those numbers', () => {
    const report = JSON.parse(fs.readFileSync(path.join(run, 'report.json'), 'utf8')) as Report;
    const main = report.variants.filter((v) => v.kind !== 'expert');
    expect(main.map((v) => v.kind)).toEqual(['aptp', 'singleArchitecture', 'teacher']);
    for (const v of main) {
      expect(Number.isFinite(v.fid)).toBe(true);
      expect(Number.isFinite(v.cmmd)).toBe(true);
      expect(v.adherence!.overall.total).toBe(Q.evalPrompts);
      expect(v.images).toBe(Q.evalPrompts);
    }
    const aptpRows = jsonl(path.join(run, 'samples/aptp/manifest.jsonl'));
    expect(main[0]!.meanMacs).toBeCloseTo(aptpRows.reduce((s, r) => s + (r.macs as number), 0) / aptpRows.length, 6);
    expect(report.summary.teacherMacs).toBe(jsonl(path.join(run, 'samples/teacher/manifest.jsonl'))[0]!.macs);
    const counts = (name: string) => JSON.parse(fs.readFileSync(path.join(run, 'prune', name, 'routing-train.json'), 'utf8')).counts;
    expect(report.codeUsage.withOt!.counts).toEqual(counts('aptp'));
    expect(report.codeUsage.withoutOt!.counts).toEqual(counts('no-ot'));
    expect(report.claims.map((c) => c.group)).toEqual(expect.arrayContaining(['quality', 'macsByCategory', 'codeUsage']));
    expect(report.categories.map((c) => c.name).sort()).toEqual(expect.arrayContaining(['text']));
    expect(fs.statSync(path.join(run, 'report.html')).size).toBeGreaterThan(10_000);
    // the table is a pure function of report.json and the run's files
    const results = fs.readFileSync(path.join(run, 'results.md'), 'utf8');
    const cfg = JSON.parse(fs.readFileSync(path.join(run, 'config.json'), 'utf8'));
    const finetuned = counts('aptp').map((_: number, k: number) => fs.existsSync(path.join(run, 'finetune/aptp', `expert-${k}`, 'unet')));
    expect(formatResults(report, { mode: 'quick', seed: 43, budget: Q, pruningTarget: cfg.pruningTarget, trainRouted: counts('aptp'), finetuned })).toBe(results);
    for (const c of report.claims) expect(results).toContain(`**${c.status}**`);
    // per stated attribute: the teacher's row lists the report's shares, in the table's column order
    const teacher = main[2]!;
    const attributeTable = results.split('\n').filter((l) => l.startsWith('| model | category |'))[0]!;
    const columns = attributeTable.split('|').map((c) => c.trim()).filter((c) => c !== '').slice(1);
    const teacherRow = results.split('\n').filter((l) => l.startsWith(`| ${teacher.name} |`))[1]!;
    expect(columns.length).toBeGreaterThan(2);
    expect(teacherRow).toBe(`| ${teacher.name} | ${columns.map((a) => `${formatNumber(100 * teacher.adherence!.perAttribute[a]!.ratio!, 3)} %`).join(' | ')} |`);
  });

  it('is deterministic: a stage re-run from the run folder reproduces its outputs bit for bit', () => {
    const again = path.join(tmp, 'prune-again');
    const r = spawnSync(process.execPath, [CLIS[0]!, 'prune', '--config', path.join(run, 'configs/prune-aptp.json'), '--out', again], { cwd: root, encoding: 'utf8' });
    expect(r.status).toBe(0);
    const bytes = (d: string) => fs.readFileSync(path.join(d, 'router/router.safetensors'));
    expect(bytes(again).equals(bytes(path.join(run, 'prune/aptp')))).toBe(true);
    const samples = path.join(tmp, 'samples-again');
    const s = spawnSync(process.execPath, [CLIS[1]!, 'sample', '--model-dir', path.join(run, 'models/aptp'), '--prompts-file', path.join(run, 'prompts/eval.jsonl'), '--out', samples, '--scheduler', Q.scheduler, '--steps', String(Q.sampleSteps), '--guidance', String(Q.guidance), '--batch-size', String(Q.sampleBatchSize), '--seed', '43'], { cwd: root, encoding: 'utf8' });
    expect(s.status).toBe(0);
    for (const f of fs.readdirSync(path.join(samples, 'images'))) {
      expect(fs.readFileSync(path.join(samples, 'images', f)).equals(fs.readFileSync(path.join(run, 'samples/aptp/images', f)))).toBe(true);
    }
  });

  it('refuses a run folder that is not empty, and names a missing teacher (exit 3)', async () => {
    const busy = await cli(['demo', '--quick', '--out', run]);
    expect(busy.code).toBe(3);
    expect(busy.err).toMatch(/run folder is not empty/);
    const missing = await cli(['demo', '--quick', '--out', path.join(tmp, 'x'), '--teacher', path.join(tmp, 'no-teacher')]);
    expect(missing.code).toBe(3);
    expect(missing.err).toMatch(/no-teacher\/unet\/config\.json: teacher not found/);
  });
});

describe('demo progress lines', () => {
  it('reads the stages\' plain progress lines, composing the sampler\'s batches', () => {
    expect(progressFraction('prune: 30/120  25% 1m02s<3m06s loss=1.2', /^prune/)).toBe(0.25);
    expect(progressFraction('batch 3/4 (expert 1, 8 prompts): 13/26  50% 2.0s<2.0s', /^batch/)).toBe((2 + 0.5) / 4);
    expect(progressFraction('load unet: 1/1 100% 0.1s<0.0s', /^batch/)).toBeNull();
    expect(progressFraction('routed 4000 of 4000 prompts', /^route/)).toBeNull();
  });
});
