import * as tf from '@tensorflow/tfjs-core';
import { applyTeacherUpdate, type TeacherBatch, type TeacherStepContext } from '../steps/teacherStep';
import type { GradientWorkerPool } from './pool';
import type { ReplicaInit } from './replica';
import { shardGradients } from './replica';
import { combineShardGradients, flattenTensors, parameterKeys, teacherShards } from './shards';

/** A started pool and the parameter layout its flat buffers follow. */
export interface DataParallel {
  pool: GradientWorkerPool;
  keys: string[];
  shapes: Record<string, number[]>;
}

/** The replica description of a step context's model (what `GradientWorkerPool.start` sends to each thread). */
export function replicaInit(ctx: Pick<TeacherStepContext, 'params' | 'scheduler' | 'snrGamma' | 'x0WeightedAs'>, unet: Record<string, unknown>, backend: string): ReplicaInit {
  return { backend, unet, scheduler: { ...ctx.scheduler.config }, snrGamma: ctx.snrGamma, x0WeightedAs: ctx.x0WeightedAs, keys: parameterKeys(ctx.params) };
}

export function dataParallelLayout(pool: GradientWorkerPool, params: Record<string, tf.Variable>): DataParallel {
  const keys = parameterKeys(params);
  return { pool, keys, shapes: Object.fromEntries(keys.map((k) => [k, [...params[k]!.shape]])) };
}

/**
 * Steps 3–5 of teacherStep.ts with the batch cut into `pool.size + 1` shards (shards.ts): shard 0 on this thread,
 * the others on the worker threads with a copy of the current weights, all at once; then the row-weighted mean
 * gradient goes through the same optimizer step and EMA update (`applyTeacherUpdate`). The caller owns and disposes the batch.
 */
export async function dataParallelTeacherStepOn(ctx: TeacherStepContext, dp: DataParallel, batch: TeacherBatch, k: number): Promise<{ loss: number; meanTimestep: number }> {
  const context = ctx.conditioner.encodeSync(batch.prompts);
  let shards;
  try {
    shards = teacherShards(batch, context, dp.pool.size + 1);
  } finally {
    context.dispose();
  }
  const remote = dp.pool.gradients(flattenTensors(ctx.params, dp.keys), shards.slice(1));
  remote.catch(() => undefined); // awaited below; a failure of this thread's shard must not leave it unhandled
  const local = shardGradients(ctx, dp.keys, shards[0]!);
  const { loss, grads } = combineShardGradients([local, ...(await remote)], dp.keys, dp.shapes);
  return applyTeacherUpdate(ctx, batch, loss, grads, k);
}
