import * as tf from '@tensorflow/tfjs-core';
import { DDPMScheduler, ShapeError, type SchedulerConfig } from '@aptp/core';
import type { X0Weighting } from '@aptp/losses';
import { parseUNetConfig, type UNet2DConditionModel } from '@aptp/unet-gating';
import { namedGrads } from '../optim/adamW';
import { teacherLoss } from '../steps/teacherStep';
import { createTrainableUNet, initUNetWeights, type TrainableUNet } from '../steps/trainableUNet';
import { flattenTensors, parameterKeys, type ShardGradients, type TeacherShard } from './shards';

/** What a gradient replica needs to rebuild the teacher's loss (plain data: it crosses to a worker thread). */
export interface ReplicaInit {
  /** Tensor backend name (as `initBackend` takes it); undefined = the default order. */
  backend?: string;
  /** The diffusers UNet config.json object. */
  unet: Record<string, unknown>;
  /** The training noise schedule. */
  scheduler: Partial<SchedulerConfig>;
  snrGamma: number | null;
  x0WeightedAs: X0Weighting;
  /** The parameter keys of the main thread's model, in flat-buffer order (checked against the replica's). */
  keys: string[];
}

interface LossModel {
  unet: UNet2DConditionModel<tf.Tensor>;
  scheduler: DDPMScheduler;
  snrGamma: number | null;
  x0WeightedAs: X0Weighting;
  params: Record<string, tf.Variable>;
}

/** Mean loss and flat gradient of one shard under the model's current weights (shards.ts formula, term i). */
export function shardGradients(model: LossModel, keys: readonly string[], shard: TeacherShard): ShardGradients {
  const x0 = tf.tensor4d(shard.x0, shard.shape);
  const noise = tf.tensor4d(shard.noise, shard.shape);
  const context = tf.tensor3d(shard.context, shard.contextShape);
  try {
    const batch = { x0, noise, timesteps: shard.timesteps, prompts: [], rows: [] };
    const { value, grads } = namedGrads(() => teacherLoss(model, batch, context), model.params);
    try {
      return { loss: value.dataSync()[0]!, grads: flattenTensors(grads, keys), rows: shard.shape[0] };
    } finally {
      tf.dispose([value, ...Object.values(grads)]);
    }
  } finally {
    tf.dispose([x0, noise, context]);
  }
}

/** A copy of the teacher on another thread: receives weights and a shard, returns the shard's loss and gradient. */
export class TeacherGradientReplica {
  private readonly trainable: TrainableUNet;
  private readonly model: LossModel;
  private readonly keys: string[];

  constructor(init: ReplicaInit) {
    const config = parseUNetConfig(init.unet, 'unet');
    this.trainable = createTrainableUNet(config, initUNetWeights(config, 0), 'replica');
    this.keys = parameterKeys(this.trainable.params);
    if (this.keys.length !== init.keys.length || this.keys.some((k, i) => k !== init.keys[i])) {
      this.trainable.dispose();
      throw new ShapeError('the replica UNet has other parameters than the main model', { field: 'keys', expected: init.keys.length, found: this.keys.length });
    }
    this.model = { unet: this.trainable.unet, scheduler: new DDPMScheduler(init.scheduler), snrGamma: init.snrGamma, x0WeightedAs: init.x0WeightedAs, params: this.trainable.params };
  }

  /** Sets the weights (flat, in key order) and computes the shard's loss and gradient. */
  gradients(weights: Float32Array, shard: TeacherShard): ShardGradients {
    let offset = 0;
    for (const k of this.keys) {
      const v = this.model.params[k]!;
      if (offset + v.size > weights.length) throw new ShapeError('weight buffer too short', { field: 'weights', expected: `> ${offset + v.size}`, found: weights.length });
      tf.tidy(() => v.assign(tf.tensor(weights.subarray(offset, offset + v.size), v.shape)));
      offset += v.size;
    }
    if (offset !== weights.length) throw new ShapeError('weight buffer length', { field: 'weights', expected: offset, found: weights.length });
    return shardGradients(this.model, this.keys, shard);
  }

  dispose(): void {
    this.trainable.dispose();
  }
}
