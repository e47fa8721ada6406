import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import { Rng, initBackend } from '@aptp/core';
import { PromptRouter } from '@aptp/router';
import { aptpLayout, parseUNetConfig } from '@aptp/unet-gating';
import { fmt, machineLoad, measure, table, type Timing } from './harness';

/**
 * Inference routing benchmark (issue 5): ms to route B prompt embeddings (768-d, default 10 000) to K codes (default
 * 16) over the SD 2.1 gate layout (L = 1620), in both modes (reference cosine argmax and capacity-balanced), through
 * `PromptRouter.route` — its default `ort` engine (onnxruntime matmuls + host gate loops, `fastRoute.ts`) and, with
 * `--tfjs`, the tfjs tensor path for comparison (also checks that both give the same expert ids).
 * A plain program (never a test): `node dist/bench/routing.bench.js [--prompts 10000] [--codes 16] [--tfjs]`.
 */

const SD21_CONFIG = {
  attention_head_dim: [5, 10, 20, 20],
  block_out_channels: [320, 640, 1280, 1280],
  cross_attention_dim: 1024,
  down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
  in_channels: 4,
  layers_per_block: 2,
  norm_num_groups: 32,
  out_channels: 4,
  sample_size: 96,
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
  use_linear_projection: true,
  upcast_attention: true,
};

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      prompts: { type: 'string', default: '10000' },
      codes: { type: 'string', default: '16' },
      reps: { type: 'string', default: '5' },
      tfjs: { type: 'boolean', default: false },
      backend: { type: 'string', default: 'wasm' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write('routing.bench: ms to route --prompts (10000) 768-d embeddings to --codes (16) codes, L = 1620, both modes.\n  --reps 5  --tfjs (also time the tfjs path and compare ids)  --backend wasm|cpu (tfjs backend)\n');
    return;
  }
  const B = Number(values.prompts);
  const K = Number(values.codes);
  const reps = Number(values.reps);
  const backend = await initBackend({ backend: values.backend });
  const layout = aptpLayout(parseUNetConfig(SD21_CONFIG));
  const L = layout.vectorLength;
  const router = PromptRouter.init(layout, { inputDim: 768, numCodes: K }, 43);
  // Codes: soft gates of K random prompts (so prompts spread over the experts, as after training).
  const rng = Rng.forKey(43, 'routing-bench');
  const codes = tf.tidy(() =>
    router.gumbel(router.predictor.forward(tf.tensor2d(rng.normal(K * 768), [K, 768])), tf.tensor2d(rng.normal(K * L), [K, L])),
  );
  router.codebook.setEmbeddingGs(codes);
  codes.dispose();
  const x = tf.tensor2d(rng.normal(B * 768), [B, 768]);
  const load = machineLoad();
  process.stdout.write(`routing ${B} × 768 → ${K} codes (L = ${L}); tfjs backend ${backend.name}; ${load.cores} × ${load.cpu}, load ${fmt(load.load1)}\n`);

  const rows: string[][] = [];
  const results: Record<string, Int32Array> = {};
  const row = (engine: string, mode: string, t: Timing) =>
    rows.push([engine, mode, fmt(t.medianMs), fmt(t.minMs), fmt(t.cpuMsPerRun), fmt(t.cpuShare), `${fmt(t.load1[0])}→${fmt(t.load1[1])}`]);
  const engines: Array<'ort' | 'tfjs'> = values.tfjs ? ['ort', 'tfjs'] : ['ort'];
  for (const engine of engines) {
    for (const mode of ['cosine', 'balanced'] as const) {
      const t = await measure(
        async () => {
          results[`${engine}/${mode}`] = (await router.route(x, { mode, engine })).expert;
        },
        { warmup: engine === 'ort' ? 1 : 0, reps: engine === 'ort' ? reps : 1 },
      );
      row(engine, mode, t);
    }
  }
  process.stdout.write(`${table(['engine', 'mode', 'median ms', 'min ms', 'cpu ms/run', 'cpu share', 'load1'], rows, ['l', 'l', 'r', 'r', 'r', 'r', 'r'])}\n`);
  const counts = new Int32Array(K);
  for (const e of results['ort/cosine']!) counts[e]!++;
  process.stdout.write(`cosine experts used: ${counts.filter((c) => c > 0).length}/${K} (largest ${Math.max(...counts)} prompts)\n`);
  if (values.tfjs) {
    for (const mode of ['cosine', 'balanced']) {
      const a = results[`ort/${mode}`]!;
      const b = results[`tfjs/${mode}`]!;
      let diff = 0;
      for (let i = 0; i < B; i++) if (a[i] !== b[i]) diff++;
      process.stdout.write(`${mode}: ort vs tfjs expert ids differ for ${diff} of ${B} prompts\n`);
    }
  }
  x.dispose();
  router.dispose();
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exitCode = 1;
});
