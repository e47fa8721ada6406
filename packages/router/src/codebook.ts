import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, HostTensor, InputError, Rng, ShapeError } from '@aptp/core';
import type { ArchitectureLayout } from '@aptp/unet-gating';
import { GumbelSigmoidOptions, gumbelSigmoid } from './gumbel';
import { orthogonalMatrix } from './orthogonal';
import { trainable } from './predictor';

/**
 * The architecture codes (reference `StructureVectorQuantizer`, pdm/models/vq/quantizer.py; APTP.md §2.3):
 * - `embedding` `[K, L]`: K trainable code **logits** in vector layout, `orthogonal_` init (orthonormal rows);
 * - `embeddingGs` `[K, L]`: not trained; the most recent soft Gumbel-sigmoid sample of the codes, overwritten after
 *   every training forward ({@link ArchitectureCodebook.setEmbeddingGs}), used as the codes for inference routing
 *   and binarised to define the experts. Initially a copy of the logits (as the reference).
 */
export class ArchitectureCodebook {
  readonly embedding: tf.Variable;
  private gs: tf.Tensor2D;
  readonly layout: ArchitectureLayout;
  private disposed = false;

  private constructor(layout: ArchitectureLayout, embedding: tf.Variable, embeddingGs: tf.Tensor2D) {
    this.layout = layout;
    this.embedding = embedding;
    this.gs = embeddingGs;
  }

  get numCodes(): number {
    return this.embedding.shape[0]!;
  }

  /** The stored soft code sample `[K, L]` (owned by the codebook: do not dispose). */
  get embeddingGs(): tf.Tensor2D {
    this.live();
    return this.gs;
  }

  static init(layout: ArchitectureLayout, numCodes: number, rng: Rng): ArchitectureCodebook {
    if (!(Number.isInteger(numCodes) && numCodes > 0)) throw new ConfigError('number of codes must be a positive integer', { field: 'numCodes', found: numCodes });
    const w = orthogonalMatrix(numCodes, layout.vectorLength, rng);
    return new ArchitectureCodebook(layout, trainable(w, [numCodes, layout.vectorLength]), tf.tensor2d(w, [numCodes, layout.vectorLength]));
  }

  /** From `embedding.weight` `[K, L]` and (optionally) `embedding_gs` `[K, L]` (default: a copy of the logits). */
  static fromReferenceTensors(layout: ArchitectureLayout, tensors: ReadonlyMap<string, HostTensor>, numCodes: number, file = 'quantizer'): ArchitectureCodebook {
    const L = layout.vectorLength;
    const read = (name: string, required: boolean): Float32Array | null => {
      const t = tensors.get(name);
      if (!t) {
        if (required) throw new InputError('missing tensor', { code: 'E_TENSOR_MISSING', file, field: name, expected: [numCodes, L] });
        return null;
      }
      if (t.shape.length !== 2 || t.shape[0] !== numCodes || t.shape[1] !== L) throw new ShapeError('wrong shape', { file, field: name, expected: [numCodes, L], found: t.shape });
      return Float32Array.from(t.data as ArrayLike<number>);
    };
    for (const name of tensors.keys()) {
      if (name !== 'embedding.weight' && name !== 'embedding_gs') throw new InputError('unexpected tensor', { code: 'E_TENSOR_UNEXPECTED', file, field: name, expected: 'embedding.weight, embedding_gs' });
    }
    const w = read('embedding.weight', true)!;
    const gs = read('embedding_gs', false) ?? w;
    return new ArchitectureCodebook(layout, trainable(w, [numCodes, L]), tf.tensor2d(gs, [numCodes, L]));
  }

  /** A soft Gumbel-sigmoid sample of the codes `[K, L]` with noise `[K, L]` (differentiable w.r.t. `embedding`). */
  sample(noise: tf.Tensor2D, options: GumbelSigmoidOptions): tf.Tensor2D {
    this.live();
    return gumbelSigmoid(this.embedding as tf.Tensor as tf.Tensor2D, noise, this.layout, options);
  }

  /** Replaces `embeddingGs` by a detached copy of `sample` `[K, L]` (the reference does this every training forward). */
  setEmbeddingGs(sample: tf.Tensor2D): void {
    this.live();
    if (sample.rank !== 2 || sample.shape[0] !== this.numCodes || sample.shape[1] !== this.layout.vectorLength) {
      throw new ShapeError('wrong code-sample shape', { field: 'embeddingGs', expected: [this.numCodes, this.layout.vectorLength], found: sample.shape });
    }
    const old = this.gs;
    this.gs = tf.keep(tf.clone(sample));
    old.dispose();
  }

  variables(): tf.Variable[] {
    return [this.embedding];
  }

  /** `embedding.weight` and `embedding_gs` under the reference names. */
  referenceTensors(): Record<string, HostTensor> {
    this.live();
    const shape = [this.numCodes, this.layout.vectorLength];
    return {
      'embedding.weight': { dtype: 'float32', shape, data: this.embedding.dataSync() as Float32Array },
      embedding_gs: { dtype: 'float32', shape, data: this.gs.dataSync() as Float32Array },
    };
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.embedding.dispose();
    this.gs.dispose();
  }

  private live(): void {
    if (this.disposed) throw new InputError('ArchitectureCodebook used after dispose()', { code: 'E_DISPOSED' });
  }
}
