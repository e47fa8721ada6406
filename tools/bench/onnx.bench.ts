/**
 * ONNX Runtime vs tfjs-wasm per UNet step, expert speedup vs MACs ratio, grouped vs one-at-a-time batching
 * (issue 10 §3). A plain program (never a test): `node dist/bench/onnx.bench.js [--quick]`.
 *
 * Model: SD-2.1-shaped (CrossAttnDownBlock2D ×3 + DownBlock2D, 2 layers, linear projections, head size 64, GEGLU,
 * 1024-d text states, 77 tokens) at reduced widths (block_out_channels 64/128/256/256, heads 1/2/4/4) on a
 * 32×32 latent (256 px), random weights. A step is one classifier-free-guidance UNet call of batch 2.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-wasm';
import { Rng, type HostTensor } from '@aptp/core';
import {
  OrtUNetEngine,
  TfjsUNetEngine,
  aptpLayout,
  createEagerUNet,
  currentMacsOf,
  exportUNetToOnnx,
  expertConfig,
  hostSource,
  macsModel,
  parseUNetConfig,
  prunedArchitecture,
  prunedWeightSource,
  randomUNetWeights,
  type ArchitectureLayout,
  type HostArray,
  type UNetEngine,
} from '@aptp/unet-gating';
import { fmt, machineLoad, measure, ratio, table, type Timing } from './harness';

const quick = process.argv.includes('--quick');
const LATENT = quick ? 16 : 32;
const TOKENS = 77;
const REPS = quick ? 3 : 5;

const SD21_SHAPED = {
  block_out_channels: [64, 128, 256, 256],
  attention_head_dim: [1, 2, 4, 4], // heads (diffusers' naming): head size 64 as in SD 2.1
  down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
  cross_attention_dim: 1024,
  layers_per_block: 2,
  norm_num_groups: 32,
  use_linear_projection: true,
  in_channels: 4,
  out_channels: 4,
  sample_size: LATENT,
};

function host(key: string, dims: number[]): HostArray {
  return { data: Rng.forKey(1, key).normal(dims.reduce((a, b) => a * b, 1)), dims };
}

/** An architecture vector keeping `keep` of every width gate (random elements, at least one) and every depth gate. */
function archVector(layout: ArchitectureLayout, keep: number, seed: number, dropDepth = 0): Float32Array {
  const v = new Float32Array(layout.vectorLength);
  for (const g of layout.widthGates) {
    const order = Rng.forKey(seed, g.name).permutation(g.width);
    const n = Math.max(1, Math.round(keep * g.width));
    for (let i = 0; i < n; i++) v[g.offset + order[i]!] = 1;
  }
  layout.depthGates.forEach((d, i) => (v[d.vectorIndex] = i % 4 === 1 && i / 4 < dropDepth ? 0 : 1));
  return v;
}

async function stepTiming(engine: UNetEngine, batch: number): Promise<Timing> {
  const sample = host('latents', [batch, 4, LATENT, LATENT]);
  const ehs = host('text', [2 * batch, TOKENS, 1024]);
  let t = 999;
  return measure(async () => {
    await engine.predictGuided({ sample, timestep: t--, encoderHiddenStates: ehs, guidanceScale: 7.5 });
  }, { warmup: 1, reps: REPS });
}

async function main(): Promise<void> {
  const cfg = parseUNetConfig(SD21_SHAPED, 'bench/sd21-shaped/config.json');
  const weights: Map<string, HostTensor> = randomUNetWeights(cfg, 7);
  const load = machineLoad();
  console.log(`onnx.bench: SD-2.1-shaped UNet ${SD21_SHAPED.block_out_channels.join('/')}, latent ${LATENT}², ${TOKENS} tokens, CFG batch 2; ${load.cores}× ${load.cpu}, load ${fmt(load.load1)}`);

  // 1. ORT vs tfjs-wasm per UNet step (full model)
  await tf.setBackend('wasm');
  await tf.ready();
  const unet = createEagerUNet(cfg, hostSource(weights));
  const tfe = new TfjsUNetEngine(unet, true);
  const tWasm = await stepTiming(tfe, 1);
  await tfe.dispose();
  const rows: string[][] = [['tfjs-wasm (1 thread)', fmt(tWasm.medianMs), fmt(tWasm.cpuMsPerRun), fmt(tWasm.cpuShare), '×1.00', '×1.00']];
  const ort: Record<number, Timing> = {};
  for (const threads of [1, 2]) {
    const e = await OrtUNetEngine.fromExport(exportUNetToOnnx(cfg, hostSource(weights)), { intraOpNumThreads: threads });
    ort[threads] = await stepTiming(e, 1);
    await e.dispose();
    const t = ort[threads]!;
    rows.push([`ORT (${threads} intra-op thread${threads > 1 ? 's' : ''})`, fmt(t.medianMs), fmt(t.cpuMsPerRun), fmt(t.cpuShare), ratio(tWasm.medianMs, t.medianMs), ratio(tWasm.cpuMsPerRun, t.cpuMsPerRun)]);
  }
  console.log('\n1. UNet step (CFG, batch 2); wall = median ms, cpu = CPU ms per step (all threads; robust to other load)\n' +
    table(['engine', 'wall ms', 'cpu ms', 'cpu share', 'speedup (wall)', 'speedup (cpu ms)'], rows, ['l', 'r', 'r', 'r', 'r', 'r']));

  // 2. experts: speedup over the full model vs MACs ratio (ORT, 1 thread: its CPU time is the uncontended run time)
  const layout = aptpLayout(cfg);
  const macs = macsModel(cfg, { latentHeight: LATENT, latentWidth: LATENT, textTokens: TOKENS }, layout);
  const fullMacs = currentMacsOf(macs, new Float32Array(layout.vectorLength).fill(1)).totalMacs;
  const expertRows: string[][] = [];
  const plans = [
    { name: 'keep 75%', keep: 0.75, drop: 0 },
    { name: 'keep 50%', keep: 0.5, drop: 0 },
    { name: 'keep 50% + 2 depth drops', keep: 0.5, drop: 2 },
    { name: 'keep 30%', keep: 0.3, drop: 0 },
  ];
  for (const [k, p] of plans.entries()) {
    const row = archVector(layout, p.keep, 100 + k, p.drop);
    const plan = prunedArchitecture(layout, row);
    const e = await OrtUNetEngine.fromExport(exportUNetToOnnx(expertConfig(cfg), prunedWeightSource(hostSource(weights), plan), { pruned: true }), { intraOpNumThreads: 1 });
    const t = await stepTiming(e, 1);
    await e.dispose();
    const macsRatio = fullMacs / currentMacsOf(macs, row).totalMacs;
    const wall = ort[1]!.medianMs / t.medianMs;
    const cpu = ort[1]!.cpuMsPerRun / t.cpuMsPerRun;
    expertRows.push([p.name, fmt(t.medianMs), fmt(t.cpuMsPerRun), `×${fmt(macsRatio, 2)}`, `×${fmt(wall, 2)}`, `×${fmt(cpu, 2)}`, fmt(cpu / macsRatio, 2)]);
  }
  console.log('\n2. Experts (ORT, 1 thread): speedup over the full model vs MACs ratio (target: speedup ≥ 0.9 × MACs ratio)\n' +
    table(['expert', 'wall ms', 'cpu ms', 'MACs ratio', 'speedup (wall)', 'speedup (cpu ms)', 'cpu speedup / MACs ratio'], expertRows, ['l', 'r', 'r', 'r', 'r', 'r', 'r']));

  // 3. grouped batching (4 prompts of one expert in one call) vs one prompt at a time (ORT, 1 thread)
  const e = await OrtUNetEngine.fromExport(exportUNetToOnnx(cfg, hostSource(weights)), { intraOpNumThreads: 1 });
  const one = await stepTiming(e, 1);
  const four = await stepTiming(e, 4);
  await e.dispose();
  console.log('\n3. Grouped batching (ORT, 1 thread): prompt-steps per second (a step = one CFG UNet call per prompt)\n' +
    table(['mode', 'wall ms/call', 'cpu ms/call', 'prompt-steps/s (wall)', 'ratio (wall)', 'ratio (cpu ms)'], [
      ['one prompt at a time', fmt(one.medianMs), fmt(one.cpuMsPerRun), fmt(1000 / one.medianMs), '×1.00', '×1.00'],
      ['4 prompts grouped', fmt(four.medianMs), fmt(four.cpuMsPerRun), fmt(4000 / four.medianMs), ratio(4 * one.medianMs, four.medianMs), ratio(4 * one.cpuMsPerRun, four.cpuMsPerRun)],
    ], ['l', 'r', 'r', 'r', 'r', 'r']));
  console.log(`\nload average now ${fmt(machineLoad().load1)} (numbers taken on a shared machine are noisy; compare ratios)`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
