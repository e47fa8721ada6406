import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import { DENSE_ATTENTION_LIMIT, Rng, initBackend, multiHeadAttention, type AttentionPath } from '@aptp/core';
import { fmt, machineLoad, measure, ratio, table } from './harness';

/**
 * Attention core benchmark: ms per forward+backward (dq, dk, dv of a random cotangent) of `multiHeadAttention` in its
 * two paths — `loop` (2-D matmuls per image and head) and `dense` (one block-diagonal masked attention over all
 * heads) — for the shapes of the synthetic teachers' low-resolution blocks and a larger one, printing dense/loop
 * ratios and which path `auto` takes (dense while the score matrix over all heads has ≤ DENSE_ATTENTION_LIMIT entries).
 * A plain program (never a test): `node dist/bench/attention.bench.js [--reps 5] [--backend wasm]`.
 */

/** [label, batch B, heads h, query tokens S, key tokens T, head size d]. */
const CASES: ReadonlyArray<[string, number, number, number, number, number]> = [
  ['teacher 4×4 self (B16)', 16, 2, 16, 16, 32],
  ['teacher 4×4 cross (B16)', 16, 2, 16, 24, 32],
  ['prune 4×4 self (B8)', 8, 2, 16, 16, 32],
  ['8×8 self (B8)', 8, 2, 64, 64, 32],
  ['8×8 cross (B8)', 8, 2, 64, 24, 32],
  ['16×16 self (B2)', 2, 2, 256, 256, 32],
];

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { reps: { type: 'string', default: '5' }, backend: { type: 'string', default: 'wasm' }, help: { type: 'boolean', default: false } } });
  if (values.help) {
    process.stdout.write('attention.bench: ms per attention forward+backward, loop vs dense paths.\n  --reps 5  --backend wasm|cpu\n');
    return;
  }
  const reps = Number(values.reps);
  const backend = await initBackend({ backend: values.backend });
  const load = machineLoad();
  process.stdout.write(`attention forward+backward; tfjs backend ${backend.name}; ${load.cores} × ${load.cpu}, load ${fmt(load.load1)}; dense limit ${DENSE_ATTENTION_LIMIT} score entries\n`);
  const rows: string[][] = [];
  for (const [label, B, h, S, T, d] of CASES) {
    const rng = Rng.forKey(7, 'attention-bench', label);
    const C = h * d;
    const q = tf.tensor3d(rng.normal(B * S * C), [B, S, C]);
    const k = tf.tensor3d(rng.normal(B * T * C), [B, T, C]);
    const v = tf.tensor3d(rng.normal(B * T * C), [B, T, C]);
    const cot = tf.tensor3d(rng.normal(B * S * C), [B, S, C]);
    const step = (path: AttentionPath) => () => {
      const g = tf.grads((a, b, c) => tf.sum(tf.mul(multiHeadAttention(a as tf.Tensor3D, b as tf.Tensor3D, c as tf.Tensor3D, h, path), cot)));
      const out = g([q, k, v]);
      out[0]!.dataSync();
      tf.dispose(out);
    };
    const loop = await measure(step('loop'), { warmup: 1, reps });
    const dense = await measure(step('dense'), { warmup: 1, reps });
    const entries = B * h * S * B * h * T;
    rows.push([label, `${B}·${h} × ${S}×${T}×${d}`, fmt(loop.cpuMsPerRun), fmt(dense.cpuMsPerRun), ratio(dense.cpuMsPerRun, loop.cpuMsPerRun), entries <= DENSE_ATTENTION_LIMIT ? 'dense' : 'loop']);
    tf.dispose([q, k, v, cot]);
  }
  process.stdout.write(`${table(['case', 'N × S×T×d', 'loop cpu ms', 'dense cpu ms', 'dense/loop', 'auto'], rows, ['l', 'l', 'r', 'r', 'r', 'l'])}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exitCode = 1;
});
