import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { describeBackends, describeGolden, expectClose, readGoldenJson, readGoldenTensors } from '@aptp/core/testing';
import { sinkhornKnopp, sinkhornKnoppTf } from './sinkhornKnopp';
import { argmaxRows } from './matrix';

// aptp/README.md §6.5: cosine similarities S [6, 4] → Sinkhorn Q (ε 0.05, 3 iterations) → train_idx.
describeGolden('aptp/router', 'SwAV Sinkhorn-Knopp vs the reference router (router_io.safetensors)', (dir) => {
  const io = readGoldenTensors(path.join(dir, 'router_io.safetensors'));
  const json = readGoldenJson<{ train_idx: number[]; quantizer_settings: { sinkhorn_epsilon: number; sinkhorn_iterations: number } }>(
    path.join(dir, 'router.json'),
  );
  const S = io.get('train.cos_sim')!;
  const Q = io.get('train.sinkhorn_Q')!;
  const [B, K] = S.shape as [number, number];
  const options = { epsilon: json.quantizer_settings.sinkhorn_epsilon, iterations: json.quantizer_settings.sinkhorn_iterations };
  const rows = Array.from({ length: B }, (_, b) => Array.from(S.data.subarray(b * K, (b + 1) * K) as Float32Array));

  it('float64 host version reproduces train.sinkhorn_Q (1e-5) and train_idx (exact)', () => {
    expect(options).toEqual({ epsilon: 0.05, iterations: 3 });
    const q = sinkhornKnopp(rows, options);
    expectClose(q.data, Q.data as Float32Array, { name: 'train.sinkhorn_Q', rtol: 1e-5 });
    expect(Array.from(argmaxRows(q))).toEqual(json.train_idx);
  });

  describeBackends('sinkhornKnoppTf', () => {
    it('reproduces train.sinkhorn_Q (1e-5) and train_idx (exact)', () => {
      const s = tf.tensor2d(S.data as Float32Array, [B, K]);
      const q = sinkhornKnoppTf(s, options);
      const idx = tf.argMax(q, 1);
      try {
        expectClose(q, Q.data as Float32Array, { name: 'train.sinkhorn_Q', rtol: 1e-5, shape: [B, K] });
        expect(Array.from(idx.dataSync())).toEqual(json.train_idx);
      } finally {
        tf.dispose([s, q, idx]);
      }
    });
  });
});
