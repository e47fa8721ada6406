import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import { EagerOps, initBackend } from '@aptp/core';
import { createEagerUNet, eagerTensorFactory, hostSource, type TensorFactory, type UNet2DConditionModel } from '@aptp/unet-gating';
import { fmt, machineLoad, measure, ratio, table, type Timing } from './harness';
import { kernelProfile, timedOps, type KernelProfile, type OpStat } from './opProfile';
import { f32, inputsAt, macsOf, sdModel, tinyModel, type BenchModel, type Inputs, type MacsCount, type ModelId } from './unetModels';

/**
 * UNet benchmark (issue 3 item 6): ms per call at batch 2 of the eager tfjs UNet (`@aptp/unet-gating`) for
 * - `tiny`: the golden `unet-tiny` (widths 16/32/48/48, 16×16 latents, 7 text tokens of width 32), and
 * - `sd`: an SD-2.1-shaped random model (SD 2.1's block structure with widths 64/128/256/256, head size 64, cross-attention
 *   width 1024, 32×32 latents, 77 text tokens),
 * on wasm and cpu, for the forward (frozen weights, as in sampling) and for a forward+backward step with respect to
 * every weight (weights as trainable `tf.Variable`s, `tf.variableGrads` of a mean-square loss).
 *
 * Effective GFLOP/s = 2·MACs / time, MACs from the APTP MACs model (`macsModel`, batch 1 → × batch) with the
 * cross-attention core counted with the real number of text tokens (the reference counter uses the query length,
 * see below); a forward+backward step is counted as 3× the forward. Issue 3 targets on wasm: ≥ 10 GFLOP/s forward,
 * ≥ 8 GFLOP/s forward+backward.
 *
 * Build and run: `npx nx run tools:bench` (or `npm run bench -w tools -- --help`).
 */

const TARGET_GFLOPS: Record<Mode, number> = { forward: 10, 'fwd+bwd': 8 };
/** Default timed runs on cpu (an SD-shaped forward takes ~40 CPU-seconds there, a step ~3× that). */
const CPU_REPS: Record<ModelId, number> = { tiny: 3, sd: 1 };
/** Backward w.r.t. activations and weights ≈ 2× the forward's MACs. */
const STEP_FLOP_FACTOR: Record<Mode, number> = { forward: 1, 'fwd+bwd': 3 };

type Mode = 'forward' | 'fwd+bwd';
type BackendId = 'wasm' | 'cpu';

const HELP = `unet.bench: ms per UNet call (batch 2) on tfjs wasm and cpu, with effective GFLOP/s.

  --models tiny,sd        which models (tiny = golden unet-tiny, sd = SD-2.1-shaped random, widths 64..256)
  --backends wasm,cpu     which tfjs backends
  --modes forward,fwd+bwd which measurements
  --warmup N              untimed runs before timing, >= 1 (the first is checked: golden output / finite
                          loss and gradient); default 2 on wasm, 1 on cpu
  --reps N                timed runs on wasm, the median is reported (default 5)
  --cpu-reps N            timed runs on cpu (default 3 for tiny, 1 for sd: cpu is ~30x slower than wasm)
  --batch N               batch size (default 2)
  --cross-dim N           cross_attention_dim of the sd model (default 1024)
  --profile auto|on|off   per-op breakdown (auto: wasm cases below the target)
  --json FILE             also write all numbers as JSON
  --golden DIR            golden data folder (default $APTP_GOLDEN_DIR or ../shared/golden)`;

interface Args {
  models: ModelId[];
  backends: BackendId[];
  modes: Mode[];
  warmup: number | null;
  reps: number;
  cpuReps: number | null;
  batch: number;
  crossDim: number;
  profile: 'auto' | 'on' | 'off';
  json: string | null;
  golden: string;
}

function listArg<T extends string>(value: string, allowed: readonly T[], flag: string): T[] {
  const items = value.split(',').map((s) => s.trim()).filter(Boolean);
  for (const it of items) if (!allowed.includes(it as T)) throw new Error(`--${flag}: expected a list of ${allowed.join(', ')}, found "${it}"`);
  return items as T[];
}

function intArg(value: string, flag: string, min: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${flag}: expected an integer >= ${min}, found "${value}"`);
  return n;
}

function parseCli(argv: string[]): Args | null {
  const { values } = parseArgs({
    args: argv,
    options: {
      models: { type: 'string', default: 'tiny,sd' },
      backends: { type: 'string', default: 'wasm,cpu' },
      modes: { type: 'string', default: 'forward,fwd+bwd' },
      warmup: { type: 'string' },
      reps: { type: 'string', default: '5' },
      'cpu-reps': { type: 'string' },
      batch: { type: 'string', default: '2' },
      'cross-dim': { type: 'string', default: '1024' },
      profile: { type: 'string', default: 'auto' },
      json: { type: 'string' },
      golden: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.help) return null;
  const profile = values.profile!;
  if (profile !== 'auto' && profile !== 'on' && profile !== 'off') throw new Error(`--profile: expected auto, on or off, found "${profile}"`);
  const repoRoot = path.resolve(__dirname, '..', '..', '..'); // tools/dist/bench → repo root
  return {
    models: listArg(values.models!, ['tiny', 'sd'] as const, 'models'),
    backends: listArg(values.backends!, ['wasm', 'cpu'] as const, 'backends'),
    modes: listArg(values.modes!, ['forward', 'fwd+bwd'] as const, 'modes'),
    warmup: values.warmup === undefined ? null : intArg(values.warmup, 'warmup', 1),
    reps: intArg(values.reps!, 'reps', 1),
    cpuReps: values['cpu-reps'] === undefined ? null : intArg(values['cpu-reps'], 'cpu-reps', 1),
    batch: intArg(values.batch!, 'batch', 1),
    crossDim: intArg(values['cross-dim']!, 'cross-dim', 1),
    profile,
    json: values.json ?? null,
    golden: values.golden ?? process.env.APTP_GOLDEN_DIR ?? path.resolve(repoRoot, '..', 'shared', 'golden'),
  };
}

const log = (msg: string): void => void process.stderr.write(`[unet.bench] ${msg}\n`);

// ---- measurements ------------------------------------------------------------------------------------------------

/** Trainable variables from the eager factory (the temporary tensor is disposed). */
const variableFactory: TensorFactory<tf.Tensor> = {
  conv: (w, k) => toVariable(eagerTensorFactory.conv(w, k)),
  linear: (w, k) => toVariable(eagerTensorFactory.linear(w, k)),
  vector: (v, k) => toVariable(eagerTensorFactory.vector(v, k)),
};

function toVariable(t: tf.Tensor): tf.Tensor {
  const v = tf.variable(t, true);
  t.dispose();
  return v;
}

function disposeOutput(out: { sample: tf.Tensor; blocks: Record<string, tf.Tensor> }): void {
  tf.dispose([out.sample, ...Object.values(out.blocks)]);
}

function forwardOnce(unet: UNet2DConditionModel<tf.Tensor>, x: Inputs): void {
  const out = unet.forward(x);
  out.sample.dataSync();
  disposeOutput(out);
}

/** One forward+backward step w.r.t. every trainable variable; returns the loss and the squared gradient norm. */
function stepOnce(unet: UNet2DConditionModel<tf.Tensor>, x: Inputs): [number, number] {
  const { value, grads } = tf.variableGrads(() =>
    tf.tidy(() => {
      const out = unet.forward(x);
      return tf.mean(tf.square(out.sample)) as tf.Scalar;
    }),
  );
  const gradSq = tf.tidy(() => tf.addN(Object.values(grads).map((g) => tf.sum(tf.square(g)))));
  const result: [number, number] = [value.dataSync()[0]!, gradSq.dataSync()[0]!];
  tf.dispose([value, gradSq, ...Object.values(grads)]);
  return result;
}

interface Result {
  backend: BackendId;
  model: ModelId;
  mode: Mode;
  batch: number;
  /** FLOPs of one call at this batch: 2·MACs·batch (× 3 for fwd+bwd). */
  flop: number;
  timing: Timing;
  gflops: number;
  /** FLOPs / median CPU time: the rate with the core to ourselves (an estimate). */
  gflopsPerCpuSecond: number;
  tensorsLeakedPerRun: number;
  check: string;
}

interface ProfileReport {
  backend: BackendId;
  model: ModelId;
  /** Mean of 3 forwards through the timed `Ops` wrapper. */
  forwardOps: { wallMs: number; cpuMs: number; stats: OpStat[] };
  forwardKernels: KernelProfile;
  stepKernels: KernelProfile | null;
}

async function benchCase(a: Args, backend: BackendId, m: BenchModel, macs: MacsCount): Promise<{ results: Result[]; profile: ProfileReport | null }> {
  // The first (checked) run of each mode is the first warm-up run.
  const warmup = Math.max(1, a.warmup ?? (backend === 'wasm' ? 2 : 1));
  const reps = backend === 'wasm' ? a.reps : (a.cpuReps ?? CPU_REPS[m.id]);
  const x = inputsAt(m, a.batch);
  const results: Result[] = [];
  const record = (mode: Mode, timing: Timing, leaked: number, check: string) => {
    const flop = 2 * macs.computed * a.batch * STEP_FLOP_FACTOR[mode];
    results.push({
      backend,
      model: m.id,
      mode,
      batch: a.batch,
      flop,
      timing,
      gflops: flop / (timing.medianMs * 1e6),
      gflopsPerCpuSecond: flop / (timing.cpuMsPerRun * 1e6),
      tensorsLeakedPerRun: leaked,
      check,
    });
    log(`${backend} ${m.id} ${mode}: median ${fmt(timing.medianMs)} ms (${timing.samplesMs.map((s) => fmt(s)).join(', ')}), cpu share ${fmt(timing.cpuShare, 2)}, load ${fmt(timing.load1[0], 1)}→${fmt(timing.load1[1], 1)}`);
  };
  try {
    if (a.modes.includes('forward')) {
      const unet = createEagerUNet(m.config, hostSource(m.weights, m.id));
      try {
        // Sanity check: the golden model must reproduce its reference output.
        const out = unet.forward(x);
        let check: string;
        if (m.host.reference && a.batch === m.host.reference.shape[0]) {
          const ref = f32(m.host.reference);
          const got = out.sample.dataSync();
          let err = 0;
          for (let i = 0; i < ref.length; i++) err = Math.max(err, Math.abs(got[i]! - ref[i]!));
          check = `max|out-ref| ${err.toExponential(1)}`;
        } else {
          const v = out.sample.dataSync();
          let mx = 0;
          for (const y of v) mx = Number.isFinite(y) ? Math.max(mx, Math.abs(y)) : Infinity;
          check = `max|out| ${fmt(mx, 2)}`;
        }
        disposeOutput(out);
        const before = tf.memory().numTensors;
        const timing = await measure(() => forwardOnce(unet, x), { warmup: warmup - 1, reps });
        record('forward', timing, (tf.memory().numTensors - before) / (warmup - 1 + reps), check);
      } finally {
        unet.dispose();
      }
    }
    if (a.modes.includes('fwd+bwd')) {
      const unet = createEagerUNet(m.config, hostSource(m.weights, m.id), { factory: variableFactory });
      try {
        const [loss, gradSq] = stepOnce(unet, x);
        const check = `loss ${loss.toExponential(2)}, |grad| ${Math.sqrt(gradSq).toExponential(2)}`;
        if (!Number.isFinite(loss) || !Number.isFinite(gradSq)) throw new Error(`${m.id} on ${backend}: non-finite step (${check})`);
        const before = tf.memory().numTensors;
        const timing = await measure(() => void stepOnce(unet, x), { warmup: warmup - 1, reps });
        record('fwd+bwd', timing, (tf.memory().numTensors - before) / (warmup - 1 + reps), check);
      } finally {
        unet.dispose();
      }
    }
    const wantProfile = a.profile === 'on' || (a.profile === 'auto' && backend === 'wasm' && results.some((r) => r.gflops < TARGET_GFLOPS[r.mode]));
    const profile = wantProfile ? await profileCase(backend, m, x, a.modes.includes('fwd+bwd')) : null;
    return { results, profile };
  } finally {
    tf.dispose([x.sample, x.timestep, x.encoderHiddenStates]);
  }
}

/** Per-op and per-kernel breakdown of one forward (after a warm-up) and of one forward+backward step. */
async function profileCase(backend: BackendId, m: BenchModel, x: Inputs, withStep: boolean): Promise<ProfileReport> {
  log(`${backend} ${m.id}: profiling`);
  const timer = timedOps(new EagerOps());
  const unet = createEagerUNet(m.config, hostSource(m.weights, m.id), { ops: timer.ops });
  let forwardOps: ProfileReport['forwardOps'];
  try {
    forwardOnce(unet, x);
    timer.reset();
    const reps = 3;
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) forwardOnce(unet, x);
    const wallMs = (performance.now() - t0) / reps;
    const c = process.cpuUsage(c0);
    const cpuMs = (c.user + c.system) / 1000 / reps;
    forwardOps = { wallMs, cpuMs, stats: timer.stats().map((s) => ({ ...s, calls: s.calls / reps, cpuMs: s.cpuMs / reps, ms: s.ms / reps, macs: s.macs / reps })) };
  } finally {
    unet.dispose();
  }
  const plain = createEagerUNet(m.config, hostSource(m.weights, m.id));
  let forwardKernels: ProfileReport['forwardKernels'];
  try {
    forwardKernels = await kernelProfile(() => forwardOnce(plain, x));
  } finally {
    plain.dispose();
  }
  let stepKernels: ProfileReport['stepKernels'] = null;
  if (withStep) {
    const trainable = createEagerUNet(m.config, hostSource(m.weights, m.id), { factory: variableFactory });
    try {
      stepOnce(trainable, x);
      stepKernels = await kernelProfile(() => void stepOnce(trainable, x));
    } finally {
      trainable.dispose();
    }
  }
  return { backend, model: m.id, forwardOps, forwardKernels, stepKernels };
}

// ---- report ------------------------------------------------------------------------------------------------------

function resultsTable(results: Result[]): string {
  const rows = results.map((r) => {
    const target = r.backend === 'wasm' ? TARGET_GFLOPS[r.mode] : null;
    return [
      r.backend,
      r.model,
      r.mode,
      fmt(r.flop / 1e9, 2),
      fmt(r.timing.medianMs),
      `${fmt(r.timing.minMs)}–${fmt(r.timing.maxMs)}`,
      fmt(r.gflops, 2),
      target === null ? '–' : `${ratio(r.gflops, target)} of ${target}`,
      fmt(r.timing.cpuShare, 2),
      fmt(r.gflopsPerCpuSecond, 2),
      `${fmt(r.timing.load1[0], 1)}→${fmt(r.timing.load1[1], 1)}`,
      `${r.timing.samplesMs.length}`,
      r.tensorsLeakedPerRun === 0 ? '0' : fmt(r.tensorsLeakedPerRun, 1),
      r.check,
    ];
  });
  return table(
    ['backend', 'model', 'mode', 'GFLOP', 'median ms', 'min–max ms', 'GFLOP/s', 'vs target', 'cpu share', 'GFLOP/cpu-s', 'load1', 'n', 'leak/run', 'check'],
    rows,
    ['l', 'l', 'l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l'],
  );
}

function ratiosTable(results: Result[]): string {
  const find = (b: BackendId, m: ModelId, mode: Mode) => results.find((r) => r.backend === b && r.model === m && r.mode === mode);
  const rows: string[][] = [];
  for (const m of ['tiny', 'sd'] as const) {
    for (const mode of ['forward', 'fwd+bwd'] as const) {
      const w = find('wasm', m, mode);
      const c = find('cpu', m, mode);
      if (w && c) rows.push([m, `cpu / wasm time, ${mode}`, ratio(c.timing.medianMs, w.timing.medianMs), ratio(c.timing.cpuMsPerRun, w.timing.cpuMsPerRun)]);
    }
    for (const b of ['wasm', 'cpu'] as const) {
      const f = find(b, m, 'forward');
      const s = find(b, m, 'fwd+bwd');
      if (f && s) rows.push([m, `${b}: fwd+bwd / forward time`, ratio(s.timing.medianMs, f.timing.medianMs), ratio(s.timing.cpuMsPerRun, f.timing.cpuMsPerRun)]);
    }
  }
  return table(['model', 'ratio', 'wall', 'cpu time'], rows, ['l', 'l', 'r', 'r']);
}

/** Per-op table: CPU time and its share of the call's CPU time, wall time, MACs and GFLOP per CPU-second. */
function statTable(stats: OpStat[], total: { cpuMs: number; wallMs: number }, top = 16): string {
  const pct = (ms: number) => `${fmt((100 * ms) / total.cpuMs, 1)} %`;
  const shown = stats.slice(0, top);
  const rest = stats.slice(top);
  const rows = shown.map((s) => [
    s.name,
    fmt(s.calls, 0),
    fmt(s.cpuMs),
    pct(s.cpuMs),
    fmt(s.ms),
    s.macs > 0 ? fmt(s.macs / 1e9, 3) : '',
    s.macs > 0 && s.cpuMs > 0 ? fmt((2 * s.macs) / (s.cpuMs * 1e6), 2) : '',
  ]);
  if (rest.length > 0) {
    const cpu = rest.reduce((a, s) => a + s.cpuMs, 0);
    rows.push([`(${rest.length} others)`, fmt(rest.reduce((a, s) => a + s.calls, 0), 0), fmt(cpu), pct(cpu), fmt(rest.reduce((a, s) => a + s.ms, 0)), '', '']);
  }
  const cpuSum = stats.reduce((a, s) => a + s.cpuMs, 0);
  const wallSum = stats.reduce((a, s) => a + s.ms, 0);
  rows.push(['(outside the timed calls)', '', fmt(total.cpuMs - cpuSum), pct(total.cpuMs - cpuSum), fmt(total.wallMs - wallSum), '', '']);
  rows.push(['total', '', fmt(total.cpuMs), '100 %', fmt(total.wallMs), '', '']);
  return table(['op', 'calls', 'cpu ms', 'cpu share', 'wall ms', 'GMAC', 'GFLOP/cpu-s'], rows, ['l', 'r', 'r', 'r', 'r', 'r', 'r']);
}

function profileText(p: ProfileReport): string {
  const parts = [
    `### Profile: ${p.model} on ${p.backend}`,
    '',
    'Forward, per Ops call (mean of 3 forwards):',
    '',
    statTable(p.forwardOps.stats, p.forwardOps),
    '',
    `Forward, per tfjs kernel (one forward under tf.profile; ${p.forwardKernels.wrapperCalls} custom-gradient wrappers not summed, their kernels are):`,
    '',
    statTable(p.forwardKernels.stats, p.forwardKernels),
  ];
  if (p.stepKernels) {
    parts.push('', `Forward+backward, per tfjs kernel (one step under tf.profile; ${p.stepKernels.wrapperCalls} custom-gradient wrappers not summed):`, '', statTable(p.stepKernels.stats, p.stepKernels));
  }
  return parts.join('\n');
}

async function main(): Promise<void> {
  const a = parseCli(process.argv.slice(2));
  if (a === null) {
    process.stdout.write(`${HELP}\n`);
    return;
  }
  const start = machineLoad();
  const models: BenchModel[] = a.models.map((id) => (id === 'tiny' ? tinyModel(a.golden) : sdModel(a.crossDim, a.batch)));
  const macs = new Map(models.map((m) => [m.id, macsOf(m)] as const));
  const results: Result[] = [];
  const profiles: ProfileReport[] = [];
  for (const backend of a.backends) {
    const choice = await initBackend({ backend });
    log(`backend ${choice.name}`);
    for (const m of models) {
      const r = await benchCase(a, backend, m, macs.get(m.id)!);
      results.push(...r.results);
      if (r.profile) profiles.push(r.profile);
    }
  }
  const end = machineLoad();

  const out: string[] = [];
  out.push(`## UNet benchmark (batch ${a.batch})`, '');
  out.push(`${start.cpu}, ${start.cores} cores, node ${process.version}, tfjs ${tf.version_core}; ${new Date().toISOString()}`);
  out.push(`load average at start ${fmt(start.load1, 2)} / ${fmt(start.load5, 2)} / ${fmt(start.load15, 2)}, at end ${fmt(end.load1, 2)} / ${fmt(end.load5, 2)} / ${fmt(end.load15, 2)} (1/5/15 min)`, '');
  out.push(
    table(
      ['model', 'latent', 'tokens', 'params', 'GMAC/item (MACs model)', 'GMAC/item (computed)', 'GFLOP fwd @batch'],
      models.map((m) => {
        const c = macs.get(m.id)!;
        return [m.label, `${m.latent}×${m.latent}`, `${m.tokens}×${m.config.crossAttentionDim}`, `${fmt(c.params / 1e6, 2)} M`, fmt(c.reference / 1e9, 3), fmt(c.computed / 1e9, 3), fmt((2 * c.computed * a.batch) / 1e9, 2)];
      }),
      ['l', 'r', 'r', 'r', 'r', 'r', 'r'],
    ),
    '',
  );
  out.push(resultsTable(results), '');
  out.push(
    'GFLOP = 2·MACs·batch (×3 for fwd+bwd). cpu share = process CPU time / wall time over the timed runs (1.00 = a whole core;',
    'tfjs wasm and cpu are single-threaded in Node). GFLOP/cpu-s = FLOPs per CPU-second: an estimate of the rate on an idle core.',
    `Targets (issue 3, wasm): forward ≥ ${TARGET_GFLOPS.forward} GFLOP/s, fwd+bwd ≥ ${TARGET_GFLOPS['fwd+bwd']} GFLOP/s.`,
    '',
  );
  const ratios = ratiosTable(results);
  if (ratios.split('\n').length > 2) out.push(ratios, '');
  for (const p of profiles) out.push(profileText(p), '');
  process.stdout.write(`${out.join('\n')}\n`);
  if (a.json) {
    fs.writeFileSync(a.json, `${JSON.stringify({ start, end, args: a, macs: Object.fromEntries(macs), results, profiles }, null, 2)}\n`);
    log(`wrote ${a.json}`);
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`[unet.bench] failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
