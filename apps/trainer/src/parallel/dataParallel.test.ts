import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { DDPMScheduler, InputError } from '@aptp/core';
import { describeBackends, expectClose } from '@aptp/core/testing';
import { SyntheticWorld } from '@aptp/datasets';
import { HashedTextConditioner, parseUNetConfig } from '@aptp/unet-gating';
import { namedGrads } from '../optim/adamW';
import { teacherBatch, teacherLoss, type TeacherBatch } from '../steps/teacherStep';
import { createTrainableUNet, initUNetWeights, type TrainableUNet } from '../steps/trainableUNet';
import { TINY_TEACHER_UNET } from '../steps/__fixtures__/tinyTeacher';
import { GradientWorkerPool } from './pool';
import { TeacherGradientReplica, shardGradients, type ReplicaInit } from './replica';
import { combineShardGradients, flattenTensors, parameterKeys, teacherShards, type TeacherShard } from './shards';

const cfg = parseUNetConfig(TINY_TEACHER_UNET, 'tiny');
const world = new SyntheticWorld({ seed: 0, imageSize: 16 });
const conditioner = new HashedTextConditioner({ sequenceLength: 8, dim: cfg.crossAttentionDim });
const batchOptions = { seed: 2, batchSize: 5, captionDropout: 0.2, numTrainTimesteps: 1000 };

describeBackends('data-parallel teacher gradients', (backend) => {
  let main: TrainableUNet;
  let batch: TeacherBatch;
  let context: tf.Tensor3D;
  let keys: string[];
  let shapes: Record<string, number[]>;
  const scheduler = new DDPMScheduler({ predictionType: 'sample', betaSchedule: 'squaredcos_cap_v2' });
  const model = () => ({ unet: main.unet, scheduler, snrGamma: 5, x0WeightedAs: 'epsilon' as const, params: main.params });
  const init = (): ReplicaInit => ({ backend, unet: TINY_TEACHER_UNET, scheduler: { ...scheduler.config }, snrGamma: 5, x0WeightedAs: 'epsilon', keys });

  beforeAll(() => {
    main = createTrainableUNet(cfg, initUNetWeights(cfg, 3), 'main'); // conv_out not zeroed: every weight has a gradient
    batch = teacherBatch(world, batchOptions, 1);
    context = conditioner.encodeSync(batch.prompts);
    keys = parameterKeys(main.params);
    shapes = Object.fromEntries(keys.map((k) => [k, [...main.params[k]!.shape]]));
  });
  afterAll(() => {
    tf.dispose([batch.x0, batch.noise, context]);
    main.dispose();
  });

  /** Loss and flat gradient of the whole batch, the way a one-thread step computes them. */
  const whole = () => {
    const { value, grads } = namedGrads(() => teacherLoss(model(), batch, context), main.params);
    try {
      return { loss: value.dataSync()[0]!, grads: flattenTensors(grads, keys) };
    } finally {
      tf.dispose([value, ...Object.values(grads)]);
    }
  };

  it('3 shards (this thread + a replica given the weights) combine to the whole-batch loss and gradient', () => {
    const ref = whole();
    const shards = teacherShards(batch, context, 3);
    expect(shards.map((s) => s.shape[0])).toEqual([2, 2, 1]);
    const replica = new TeacherGradientReplica(init());
    try {
      const weights = flattenTensors(main.params, keys);
      const results = [shardGradients(model(), keys, shards[0]!), replica.gradients(weights, shards[1]!)];
      const before = tf.memory().numTensors;
      results.push(replica.gradients(weights, shards[2]!));
      expect(tf.memory().numTensors).toBe(before); // a replica step leaves no tensor behind
      const combined = combineShardGradients(results, keys, shapes);
      try {
        expect(Math.abs(combined.loss - ref.loss)).toBeLessThan(1e-6 * Math.max(1, ref.loss));
        expectClose(flattenTensors(combined.grads, keys), ref.grads, { name: 'combined gradient', rtol: 1e-5 });
        // not trivially equal: the shards' own gradients differ from the whole one
        expect(Math.max(...results[2]!.grads.map((g, i) => Math.abs(g - ref.grads[i]!)))).toBeGreaterThan(1e-4);
      } finally {
        tf.dispose(Object.values(combined.grads));
      }
    } finally {
      replica.dispose();
    }
  });

  it('a replica built from another UNet config is refused', () => {
    expect(() => new TeacherGradientReplica({ ...init(), unet: { ...TINY_TEACHER_UNET, layers_per_block: 2 } })).toThrow(/keys: .*other parameters/);
  });

  it('worker threads (the built dist/gradientWorker.js) return what this thread computes for the same shards', async () => {
    const shards = teacherShards(batch, context, 3);
    const weights = flattenTensors(main.params, keys);
    const replica = new TeacherGradientReplica(init());
    let local: Array<{ loss: number; grads: Float32Array }>;
    try {
      local = [replica.gradients(weights, shards[1]!), replica.gradients(weights, shards[2]!)];
    } finally {
      replica.dispose();
    }
    const pool = await GradientWorkerPool.start({ threads: 2, init: init() });
    try {
      expect(pool.size).toBe(2);
      let tensorsAfterFirst: number[] = [];
      for (let round = 0; round < 2; round++) {
        const remote = await pool.gradients(weights, [shards[1]!, shards[2]!] as TeacherShard[]);
        remote.forEach((r, i) => {
          expect(r.rows).toBe(shards[i + 1]!.shape[0]);
          expect(r.loss).toBeCloseTo(local[i]!.loss, 6);
          expectClose(r.grads, local[i]!.grads, { name: `worker ${i + 1}`, rtol: 1e-6 });
        });
        if (round === 0) tensorsAfterFirst = remote.map((r) => r.numTensors);
        else expect(remote.map((r) => r.numTensors)).toEqual(tensorsAfterFirst); // flat memory in the workers
      }
      expect(weights.length).toBe(local[0]!.grads.length); // the caller's weights were copied, not transferred away
    } finally {
      await pool.close();
    }
    await expect(pool.gradients(weights, [shards[1]!])).rejects.toThrow(/closed/);
  });

  it('start fails with the worker\'s reason, or names the missing script', async () => {
    await expect(GradientWorkerPool.start({ threads: 1, init: { ...init(), keys: ['nope'] } })).rejects.toThrow(/gradient worker 1 could not start: keys: .*other parameters/);
    const missing = path.join(__dirname, 'no-such-worker.js');
    await expect(GradientWorkerPool.start({ threads: 1, init: init(), script: missing })).rejects.toThrow(InputError);
    await expect(GradientWorkerPool.start({ threads: 1, init: init(), script: missing })).rejects.toThrow(/no-such-worker\.js/);
  });
});
