import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { fmt, machineLoad, median, ratio, table } from './harness';

/**
 * Teacher training throughput: seconds per step and training samples per second of the committed teacher recipe
 * (apps/trainer/configs/teacher.synthetic.json) run through the built trainer CLI, one thread vs data-parallel worker
 * threads (apps/trainer/src/parallel), printed with ratios. Each case is a fresh `aptp-trainer teacher` process; the
 * per-step wall times come from its metrics.jsonl (`elapsedSec`), the first `--skip` steps (warm-up) left out.
 * Needs the trainer built (`npx nx run trainer:build`). A plain program (never a test):
 * `node dist/bench/teacher.bench.js [--steps 24] [--skip 6] [--cases 1x16,1x32,2x32]`.
 */

const ROOT = path.resolve(__dirname, '..', '..', '..');
const CLI = path.join(ROOT, 'apps/trainer/dist/main.js');
const CONFIG = path.join(ROOT, 'apps/trainer/configs/teacher.synthetic.json');

function main(): number {
  const { values } = parseArgs({
    options: {
      steps: { type: 'string', default: '24' },
      skip: { type: 'string', default: '6' },
      cases: { type: 'string', default: '1x16,1x32,2x32' },
      backend: { type: 'string', default: 'wasm' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write('teacher.bench: s/step and samples/s of the teacher recipe, one thread vs worker threads.\n  --steps 24  --skip 6  --cases <workers>x<batch>,…  --backend wasm|cpu\n');
    return 0;
  }
  if (!fs.existsSync(CLI)) {
    process.stderr.write(`teacher.bench: ${CLI} is missing; build the trainer first (npx nx run trainer:build)\n`);
    return 3;
  }
  const steps = Number(values.steps);
  const skip = Number(values.skip);
  const cases = values.cases.split(',').map((c) => c.split('x').map(Number) as [number, number]);
  const load = machineLoad();
  process.stdout.write(`teacher training steps (${path.relative(ROOT, CONFIG)}), ${steps} steps per case, first ${skip} skipped; ${load.cores} × ${load.cpu}, load ${fmt(load.load1)}\n`);
  const rows: string[][] = [];
  let base: number | null = null;
  for (const [workers, batch] of cases) {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'aptp-teacher-bench-'));
    try {
      const args = [CLI, 'teacher', '--config', CONFIG, '--steps', String(steps), '--workers', String(workers), '--batch-size', String(batch), '--check-samples', '0', '--save-every', '0', '--backend', values.backend, '--out', path.join(out, 'run')];
      const r = spawnSync(process.execPath, args, { encoding: 'utf8' });
      if (r.status !== 0) {
        process.stderr.write(`case ${workers}x${batch} failed (exit ${r.status ?? r.signal}):\n${r.stderr}\n`);
        return 1;
      }
      const elapsed = fs
        .readFileSync(path.join(out, 'run', 'metrics.jsonl'), 'utf8')
        .trim()
        .split('\n')
        .map((l) => (JSON.parse(l) as { elapsedSec: number }).elapsedSec);
      const perStep = median(elapsed.slice(skip + 1).map((e, i) => e - elapsed[skip + i]!));
      const samplesPerSec = batch / perStep;
      base ??= samplesPerSec;
      rows.push([String(workers), String(batch), fmt(perStep, 3), fmt(samplesPerSec, 1), ratio(samplesPerSec, base)]);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  }
  process.stdout.write(`${table(['threads', 'batch', 's/step (median)', 'samples/s', 'samples/s vs first case'], rows, ['r', 'r', 'r', 'r', 'r'])}\n`);
  return 0;
}

process.exitCode = main();
