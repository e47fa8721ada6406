import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, HostTensor, InputError, Rng, ShapeError } from '@aptp/core';
import type { ArchitectureLayout } from '@aptp/unet-gating';
import { orthogonalMatrix } from './orthogonal';

/**
 * The architecture predictor (reference `HyperStructure`, pdm/models/hypernet/hypernet.py; APTP.md §2.2): one Linear
 * head per width gate (`mh_fc.0 … mh_fc.{G−1}`, output = gate width) plus one head for all D depth logits
 * (`mh_fc.{G}`), applied to the prompt embedding and concatenated in vector order → logits `e` `[B, L]`.
 *
 * Stored as one `[inputDim, L]` weight (the heads' `[w_i, inputDim]` weights transposed and concatenated once, so the
 * forward is a single matmul without transpose flags) and one `[L]` bias. Init as the reference: every head's weight
 * `orthogonal_` (orthonormal rows), bias 0 — "block-orthogonal".
 *
 * `singleArchParam` is the reference's single-architecture baseline: one learnable `[1, L]` vector (`arch`,
 * standard-normal init) returned for every prompt.
 */
export interface ArchitecturePredictorOptions {
  /** Prompt-embedding width (768 for all-mpnet-base-v2; reference `input_dim`). */
  inputDim: number;
  /** Heads have a bias (reference `linear_bias`; true in the APTP configs). */
  linearBias?: boolean;
  /** Single-architecture baseline (reference `single_arch_param`). */
  singleArchParam?: boolean;
}

export class ArchitecturePredictor {
  /** `[inputDim, L]` (null for the single-arch baseline). */
  readonly weight: tf.Variable | null;
  /** `[L]` (null without bias or for the single-arch baseline). */
  readonly bias: tf.Variable | null;
  /** `[1, L]` for the single-arch baseline, else null. */
  readonly arch: tf.Variable | null;
  readonly inputDim: number;
  readonly layout: ArchitectureLayout;
  private disposed = false;

  private constructor(layout: ArchitectureLayout, inputDim: number, weight: tf.Variable | null, bias: tf.Variable | null, arch: tf.Variable | null) {
    this.layout = layout;
    this.inputDim = inputDim;
    this.weight = weight;
    this.bias = bias;
    this.arch = arch;
  }

  /** Output width of every head, in parameter order: the G width gates, then the depth head (D). */
  static headWidths(layout: ArchitectureLayout): number[] {
    const w = layout.widthGates.map((g) => g.width);
    if (layout.depthEntries > 0) w.push(layout.depthEntries);
    return w;
  }

  /** Reference initialisation from a seeded generator (orthogonal heads, zero bias). */
  static init(layout: ArchitectureLayout, options: ArchitecturePredictorOptions, rng: Rng): ArchitecturePredictor {
    const inputDim = checkInputDim(options.inputDim);
    if (options.singleArchParam) {
      return new ArchitecturePredictor(layout, inputDim, null, null, trainable(rng.normal(layout.vectorLength), [1, layout.vectorLength]));
    }
    const L = layout.vectorLength;
    const w = new Float32Array(inputDim * L);
    let col = 0;
    for (const width of ArchitecturePredictor.headWidths(layout)) {
      const head = orthogonalMatrix(width, inputDim, rng); // [width, inputDim]
      for (let o = 0; o < width; o++) for (let i = 0; i < inputDim; i++) w[i * L + col + o] = head[o * inputDim + i]!;
      col += width;
    }
    const weight = trainable(w, [inputDim, L]);
    const bias = options.linearBias === false ? null : trainable(new Float32Array(L), [L]);
    return new ArchitecturePredictor(layout, inputDim, weight, bias, null);
  }

  /**
   * From tensors under the reference names (`mh_fc.{i}.weight` `[w_i, inputDim]`, `mh_fc.{i}.bias`, or `arch`).
   * Missing, extra or mis-shaped tensors are errors naming the tensor (`file` is used in messages).
   */
  static fromReferenceTensors(layout: ArchitectureLayout, tensors: ReadonlyMap<string, HostTensor>, options: ArchitecturePredictorOptions, file = 'hypernet'): ArchitecturePredictor {
    const inputDim = checkInputDim(options.inputDim);
    const L = layout.vectorLength;
    const take = (name: string, shape: number[]): Float32Array => {
      const t = tensors.get(name);
      if (!t) throw new InputError('missing tensor', { code: 'E_TENSOR_MISSING', file, field: name, expected: shape });
      if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
        throw new ShapeError('wrong shape', { file, field: name, expected: shape, found: t.shape });
      }
      return Float32Array.from(t.data as ArrayLike<number>);
    };
    const expected = new Set<string>();
    if (options.singleArchParam) {
      expected.add('arch');
      const arch = take('arch', [1, L]);
      checkNoExtra(tensors, expected, file);
      return new ArchitecturePredictor(layout, inputDim, null, null, trainable(arch, [1, L]));
    }
    const w = new Float32Array(inputDim * L);
    const b = new Float32Array(L);
    const withBias = options.linearBias !== false;
    let col = 0;
    ArchitecturePredictor.headWidths(layout).forEach((width, h) => {
      expected.add(`mh_fc.${h}.weight`);
      const head = take(`mh_fc.${h}.weight`, [width, inputDim]);
      for (let o = 0; o < width; o++) for (let i = 0; i < inputDim; i++) w[i * L + col + o] = head[o * inputDim + i]!;
      if (withBias) {
        expected.add(`mh_fc.${h}.bias`);
        b.set(take(`mh_fc.${h}.bias`, [width]), col);
      }
      col += width;
    });
    checkNoExtra(tensors, expected, file);
    const weight = trainable(w, [inputDim, L]);
    const bias = withBias ? trainable(b, [L]) : null;
    return new ArchitecturePredictor(layout, inputDim, weight, bias, null);
  }

  /** Logits `e` `[B, L]` of prompt embeddings `[B, inputDim]`. */
  forward(x: tf.Tensor2D): tf.Tensor2D {
    this.live();
    if (x.rank !== 2 || x.shape[1] !== this.inputDim) {
      throw new ShapeError('wrong prompt-embedding shape', { field: 'x', expected: `[B, ${this.inputDim}]`, found: x.shape });
    }
    return tf.tidy(() => {
      if (this.arch) return tf.tile(this.arch, [x.shape[0], 1]) as tf.Tensor2D;
      const y = tf.matMul(x, this.weight!);
      return (this.bias ? tf.add(y, this.bias) : y) as tf.Tensor2D;
    });
  }

  /** Trainable variables (for the optimizer). */
  variables(): tf.Variable[] {
    return [this.weight, this.bias, this.arch].filter((v): v is tf.Variable => v !== null);
  }

  /** Parameters under the reference names (`mh_fc.{i}.weight` `[w_i, inputDim]`, `mh_fc.{i}.bias`, or `arch`). */
  referenceTensors(): Record<string, HostTensor> {
    this.live();
    if (this.arch) return { arch: { dtype: 'float32', shape: [1, this.layout.vectorLength], data: this.arch.dataSync() as Float32Array } };
    return ArchitecturePredictor.toReferenceNames(this.layout, this.weight!.dataSync() as Float32Array, this.bias ? (this.bias.dataSync() as Float32Array) : null, this.inputDim);
  }

  /**
   * Splits an `[inputDim, L]` weight-like array (the weight, or its gradient) and an `[L]` bias-like array into the
   * reference's per-head tensors.
   */
  static toReferenceNames(layout: ArchitectureLayout, weight: ArrayLike<number>, bias: ArrayLike<number> | null, inputDim: number): Record<string, HostTensor> {
    const L = layout.vectorLength;
    const out: Record<string, HostTensor> = {};
    let col = 0;
    ArchitecturePredictor.headWidths(layout).forEach((width, h) => {
      const head = new Float32Array(width * inputDim);
      for (let o = 0; o < width; o++) for (let i = 0; i < inputDim; i++) head[o * inputDim + i] = weight[i * L + col + o]!;
      out[`mh_fc.${h}.weight`] = { dtype: 'float32', shape: [width, inputDim], data: head };
      if (bias) out[`mh_fc.${h}.bias`] = { dtype: 'float32', shape: [width], data: Float32Array.from({ length: width }, (_, o) => bias[col + o]!) };
      col += width;
    });
    return out;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    tf.dispose(this.variables());
  }

  private live(): void {
    if (this.disposed) throw new InputError('ArchitecturePredictor used after dispose()', { code: 'E_DISPOSED' });
  }
}

/** A trainable variable from host data (no intermediate tensor left behind). */
export function trainable(data: Float32Array, shape: number[]): tf.Variable {
  return tf.tidy(() => tf.variable(tf.tensor(data, shape, 'float32'), true));
}

function checkInputDim(d: number): number {
  if (!(Number.isInteger(d) && d > 0)) throw new ConfigError('inputDim must be a positive integer', { field: 'inputDim', found: d });
  return d;
}

function checkNoExtra(tensors: ReadonlyMap<string, HostTensor>, expected: Set<string>, file: string): void {
  for (const name of tensors.keys()) {
    if (!expected.has(name)) throw new InputError('unexpected tensor', { code: 'E_TENSOR_UNEXPECTED', file, field: name, expected: `${expected.size} tensors mh_fc.*` });
  }
}
