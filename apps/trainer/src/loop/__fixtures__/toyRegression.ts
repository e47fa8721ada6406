import * as tf from '@tensorflow/tfjs-core';
import { Rng } from '@aptp/core';
import { AdamW, namedGrads } from '../../optim/adamW';
import { createAdamW } from '../../optim/config';
import { StepMetrics } from '../runTraining';
import { TrainingTarget, variableTarget } from '../trainingTarget';

/**
 * Test fixture: a 2-layer MLP regression on seeded data with a resumable, reshuffling data iterator and a stateful
 * noise RNG (input jitter), so an exact resume needs weights, optimizer moments and counters, RNG state and iterator
 * state — everything a real stage checkpoints.
 */
export class ToyData {
  readonly x: Float32Array; // [N, D]
  readonly y: Float32Array; // [N]
  private order: number[] = [];
  private epoch = 0;
  private position = 0;

  constructor(readonly seed: number, readonly n = 14, readonly dim = 3, readonly batchSize = 4) {
    const rng = Rng.forKey(seed, 'toy', 'data');
    this.x = rng.normal(n * dim);
    const wTrue = [1.5, -2, 0.5];
    this.y = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      let s = 0.3;
      for (let d = 0; d < dim; d++) s += this.x[i * dim + d]! * wTrue[d % wTrue.length]!;
      this.y[i] = Math.tanh(s) + 0.05 * rng.nextNormal();
    }
    this.shuffle();
  }

  private shuffle(): void {
    this.order = Rng.forKey(this.seed, 'toy', 'epoch', this.epoch).permutation(this.n);
  }

  /** Next batch of row indices (reshuffles at each epoch end; a batch may span two epochs). */
  nextIndices(): number[] {
    const out: number[] = [];
    while (out.length < this.batchSize) {
      if (this.position === this.n) {
        this.epoch += 1;
        this.position = 0;
        this.shuffle();
      }
      out.push(this.order[this.position++]!);
    }
    return out;
  }

  state(): { epoch: number; position: number } {
    return { epoch: this.epoch, position: this.position };
  }

  restore(s: unknown): void {
    const { epoch, position } = s as { epoch: number; position: number };
    this.epoch = epoch;
    this.position = position;
    this.shuffle();
  }
}

export interface ToyOptions {
  dataSeed?: number;
  initSeed?: number;
  noiseSeed?: number;
  hidden?: number;
  /** Make the inputs of this 0-based step NaN (a real NaN through forward, loss and gradients). */
  nanAtStep?: number;
}

export class ToyRegression {
  readonly data: ToyData;
  readonly params: Record<string, tf.Variable>;
  readonly optimizer: AdamW;
  noise: Rng;
  readonly target: TrainingTarget;
  private readonly nanAtStep: number;

  constructor(options: ToyOptions = {}) {
    this.data = new ToyData(options.dataSeed ?? 1);
    const hidden = options.hidden ?? 5;
    const init = Rng.forKey(options.initSeed ?? 2, 'toy', 'init');
    const v = (shape: number[], std: number): tf.Variable =>
      tf.tidy(() => tf.variable(tf.tensor(init.normal(shape.reduce((a, b) => a * b, 1), 0, std), shape, 'float32'), true));
    this.params = {
      'fc1.weight': v([this.data.dim, hidden], 0.5),
      'fc1.bias': v([hidden], 0.1),
      'fc2.weight': v([hidden, 1], 0.5),
      'fc2.bias': v([1], 0.1),
    };
    this.optimizer = createAdamW(
      [
        { name: 'hypernet', lr: 0.05, params: { 'fc1.weight': this.params['fc1.weight']!, 'fc1.bias': this.params['fc1.bias']! } },
        { name: 'quantizer', lr: 0.02, params: { 'fc2.weight': this.params['fc2.weight']!, 'fc2.bias': this.params['fc2.bias']! } },
      ],
      { lrWarmupSteps: 3, adamWeightDecay: 0.01, maxGradNorm: 2 },
    );
    this.noise = Rng.forKey(options.noiseSeed ?? 3, 'toy', 'jitter');
    this.nanAtStep = options.nanAtStep ?? -1;
    this.target = variableTarget(this.params, {
      optimizer: this.optimizer,
      hostState: () => ({ rng: { jitter: this.noise.getState() }, data: this.data.state(), extra: { note: 'toy' } }),
      restoreHostState: (s) => {
        this.noise = Rng.fromState(s.rng.jitter!);
        this.data.restore(s.data);
      },
    });
  }

  /** One optimizer step on the next batch. */
  step = (i: number): StepMetrics => {
    const idx = this.data.nextIndices();
    const { dim, batchSize } = this.data;
    const xb = new Float32Array(batchSize * dim);
    const yb = new Float32Array(batchSize);
    idx.forEach((r, b) => {
      for (let d = 0; d < dim; d++) xb[b * dim + d] = this.data.x[r * dim + d]! + 0.1 * this.noise.nextNormal();
      yb[b] = this.data.y[r]!;
    });
    if (i === this.nanAtStep) xb.fill(NaN);
    const x = tf.tensor(xb, [batchSize, dim]);
    const y = tf.tensor(yb, [batchSize, 1]);
    const p = this.params;
    const { value, grads } = namedGrads(() => {
      const h = tf.relu(tf.add(tf.matMul(x, p['fc1.weight']!), p['fc1.bias']!));
      const out = tf.add(tf.matMul(h, p['fc2.weight']!), p['fc2.bias']!);
      return tf.mean(tf.square(tf.sub(out, y))) as tf.Scalar;
    }, p);
    this.optimizer.step(grads);
    const loss = value.dataSync()[0]!;
    tf.dispose([x, y, value, ...Object.values(grads)]);
    return { loss, batchRows: idx };
  };

  weightsSnapshot(): Record<string, number[]> {
    return Object.fromEntries(Object.entries(this.params).map(([k, v]) => [k, Array.from(v.dataSync())]));
  }

  dispose(): void {
    this.optimizer.dispose();
    tf.dispose(Object.values(this.params));
  }
}
