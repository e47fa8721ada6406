import * as tf from '@tensorflow/tfjs-core';
import { HostTensor, InputError, RngState, ShapeError, WritableTensor } from '@aptp/core';
import type { AdamW } from '../optim/adamW';
import type { LoadedCheckpoint } from '../checkpoint';

/** Host-side state a step depends on besides tensors: RNG streams, data-iterator position, anything else (JSON). */
export interface HostTrainingState {
  rng?: Record<string, RngState>;
  data?: unknown;
  extra?: unknown;
}

/**
 * What `runTraining` saves and restores: a stage implements it over its model, optimizer, RNGs and data iterator.
 * Resuming must make the next step see exactly what an uninterrupted run would have seen.
 */
export interface TrainingTarget {
  /** Named tensors saved as weights.safetensors. tfjs tensors are borrowed (never disposed by the runner). */
  weights(): Record<string, WritableTensor>;
  /** Restores weights read from `file`; validates names and shapes before changing anything. */
  loadWeights(weights: ReadonlyMap<string, HostTensor>, file: string): void;
  optimizer?: AdamW | null;
  /** Host state to checkpoint (called at a step boundary). */
  hostState?(): HostTrainingState;
  /** Restores host state from a checkpoint. */
  restoreHostState?(state: Required<HostTrainingState>): void;
}

/**
 * Assigns host tensors to variables by name. Every variable must be present with its shape, and the file may hold no
 * other tensors; all checks run before the first assignment, so a bad file changes nothing.
 */
export function assignVariables(params: Record<string, tf.Variable>, weights: ReadonlyMap<string, HostTensor>, file: string): void {
  for (const [name, v] of Object.entries(params)) {
    const w = weights.get(name);
    if (!w) throw new InputError('tensor missing from checkpoint', { code: 'E_TENSOR_MISSING', file, field: name, expected: v.shape });
    if (!tf.util.arraysEqual(w.shape, v.shape)) throw new ShapeError('checkpoint tensor shape differs from the model', { file, field: name, expected: v.shape, found: w.shape });
    if ((v.dtype === 'float32') !== (w.dtype === 'float32' || w.dtype === 'float64')) throw new InputError('checkpoint tensor dtype differs from the model', { file, field: name, expected: v.dtype, found: w.dtype });
  }
  for (const name of weights.keys()) {
    if (!(name in params)) throw new InputError('checkpoint holds a tensor the model does not have', { file, field: name });
  }
  for (const [name, v] of Object.entries(params)) {
    const w = weights.get(name)!;
    const data = v.dtype === 'float32' ? Float32Array.from(w.data as Float32Array) : Int32Array.from(w.data as Int32Array);
    const t = tf.tensor(data, w.shape, v.dtype);
    v.assign(t);
    t.dispose();
  }
}

/** A `TrainingTarget` over named variables (the common case: router, expert UNet, toy models). */
export function variableTarget(
  params: Record<string, tf.Variable>,
  options: Pick<TrainingTarget, 'optimizer' | 'hostState' | 'restoreHostState'> = {},
): TrainingTarget {
  return {
    weights: () => ({ ...params }),
    loadWeights: (weights, file) => assignVariables(params, weights, file),
    ...options,
  };
}

/** Applies a loaded checkpoint to a target: weights, optimizer moments and counters, RNG/data/extra state. */
export function restoreTraining(target: TrainingTarget, checkpoint: LoadedCheckpoint): void {
  target.loadWeights(checkpoint.weights, `${checkpoint.dir}/weights.safetensors`);
  if (target.optimizer) {
    if (!checkpoint.optimizer) throw new InputError('checkpoint has no optimizer state', { code: 'E_CHECKPOINT', file: `${checkpoint.dir}/state.json`, field: 'optimizer' });
    target.optimizer.setState(checkpoint.optimizer, `${checkpoint.dir}/optimizer.safetensors`);
  }
  target.restoreHostState?.({ rng: checkpoint.state.rng, data: checkpoint.state.data, extra: checkpoint.state.extra });
}
