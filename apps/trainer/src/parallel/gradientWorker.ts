import { parentPort, workerData } from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '@aptp/core';
import { TeacherGradientReplica, type ReplicaInit } from './replica';
import type { TeacherShard } from './shards';

/**
 * Worker-thread entry of the data-parallel teacher step (built as dist/gradientWorker.js; started by pool.ts with
 * `workerData` = {@link ReplicaInit}). Protocol: it posts `{ type: 'ready', backend }` (or `{ type: 'error' }`), then
 * answers every `{ id, weights, shard }` with `{ type: 'result', id, loss, grads, rows, numTensors }` or
 * `{ type: 'error', id, message }`.
 */
export interface GradientRequest {
  id: number;
  weights: Float32Array;
  shard: TeacherShard;
}

const port = parentPort;
if (port) {
  const init = workerData as ReplicaInit;
  const fail = (err: unknown, id?: number) =>
    port.postMessage({ type: 'error', id, message: err instanceof Error ? err.message : String(err), stack: err instanceof Error ? err.stack : undefined });
  initBackend({ backend: init.backend })
    .then((choice) => {
      const replica = new TeacherGradientReplica(init);
      port.on('message', (req: GradientRequest) => {
        try {
          const r = replica.gradients(req.weights, req.shard);
          port.postMessage({ type: 'result', id: req.id, loss: r.loss, grads: r.grads, rows: r.rows, numTensors: tf.memory().numTensors }, [r.grads.buffer as ArrayBuffer]);
        } catch (err) {
          fail(err, req.id);
        }
      });
      port.postMessage({ type: 'ready', backend: choice.name });
    })
    .catch((err) => fail(err));
}
