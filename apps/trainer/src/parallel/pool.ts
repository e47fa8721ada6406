import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { AptpError, ConfigError, InputError } from '@aptp/core';
import type { GradientRequest } from './gradientWorker';
import type { ReplicaInit } from './replica';
import type { ShardGradients, TeacherShard } from './shards';

/** The built worker entry (dist/gradientWorker.js). */
export const GRADIENT_WORKER_FILE = 'gradientWorker.js';

/**
 * Where the worker entry is: next to the running bundle (dist/main.js, dist/index.js), or, when this module runs from
 * source (src/parallel/pool.ts under jest), in the package's dist folder. Null when neither exists.
 */
export function defaultWorkerScript(): string | null {
  const candidates = [path.join(__dirname, GRADIENT_WORKER_FILE), path.resolve(__dirname, '../../dist', GRADIENT_WORKER_FILE)];
  return candidates.find((f) => fs.existsSync(f)) ?? null;
}

type WorkerMessage =
  | { type: 'ready'; backend: string }
  | { type: 'result'; id: number; loss: number; grads: Float32Array; rows: number; numTensors: number }
  | { type: 'error'; id?: number; message: string; stack?: string };

interface Pending {
  resolve: (r: ShardGradients & { numTensors: number }) => void;
  reject: (e: Error) => void;
}

/** One worker thread holding a {@link TeacherGradientReplica}; one request at a time. */
class GradientThread {
  private pending: Pending | null = null;
  private nextId = 0;
  private dead: Error | null = null;

  private constructor(
    private readonly worker: Worker,
    readonly index: number,
  ) {
    worker.on('message', (m: WorkerMessage) => {
      if (m.type === 'result') this.settle(null, m);
      else if (m.type === 'error') this.settle(new AptpError(`gradient worker ${index}: ${m.message}`, { code: 'E_WORKER' }));
    });
    worker.on('error', (err) => this.die(new AptpError(`gradient worker ${index} failed: ${err.message}`, { code: 'E_WORKER', cause: err })));
    worker.on('exit', (code) => this.die(new AptpError(`gradient worker ${index} exited (code ${code})`, { code: 'E_WORKER' })));
  }

  static start(script: string, init: ReplicaInit, index: number): Promise<GradientThread> {
    return new Promise((resolve, reject) => {
      const worker = new Worker(script, { workerData: init });
      const onMessage = (m: WorkerMessage) => {
        if (m.type === 'ready') {
          worker.off('message', onMessage);
          worker.off('error', onError);
          resolve(new GradientThread(worker, index));
        } else if (m.type === 'error') {
          void worker.terminate();
          reject(new AptpError(`gradient worker ${index} could not start: ${m.message}`, { code: 'E_WORKER' }));
        }
      };
      const onError = (err: Error) => reject(new AptpError(`gradient worker ${index} could not start: ${err.message}`, { code: 'E_WORKER', cause: err }));
      worker.on('message', onMessage);
      worker.once('error', onError);
    });
  }

  private settle(err: Error | null, m?: { loss: number; grads: Float32Array; rows: number; numTensors: number }): void {
    const p = this.pending;
    this.pending = null;
    if (!p) return;
    if (err) p.reject(err);
    else p.resolve({ loss: m!.loss, grads: m!.grads, rows: m!.rows, numTensors: m!.numTensors });
  }

  private die(err: Error): void {
    this.dead ??= err;
    this.settle(err);
  }

  gradients(weights: Float32Array, shard: TeacherShard): Promise<ShardGradients & { numTensors: number }> {
    if (this.dead) return Promise.reject(this.dead);
    if (this.pending) return Promise.reject(new AptpError(`gradient worker ${this.index} is busy`, { code: 'E_WORKER' }));
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject };
      const req: GradientRequest = { id: this.nextId++, weights, shard };
      this.worker.postMessage(req, [weights.buffer as ArrayBuffer]);
    });
  }

  async close(): Promise<void> {
    this.dead ??= new AptpError(`gradient worker ${this.index} closed`, { code: 'E_WORKER' });
    await this.worker.terminate();
  }
}

/**
 * Worker threads that compute teacher shard gradients (shards.ts). `threads` replicas are started; the calling thread
 * computes shard 0 itself, so a batch is split into `threads + 1` shards.
 */
export class GradientWorkerPool {
  private constructor(private readonly threads: GradientThread[]) {}

  /** Starts `threads` workers from the built worker script (default: dist/gradientWorker.js next to this bundle). */
  static async start(options: { threads: number; init: ReplicaInit; script?: string }): Promise<GradientWorkerPool> {
    if (!Number.isInteger(options.threads) || options.threads < 1) throw new ConfigError('worker threads must be a positive integer', { field: 'workers', expected: '≥ 2 (1 = no worker threads)', found: options.threads + 1 });
    const script = options.script ? path.resolve(options.script) : defaultWorkerScript();
    if (!script || !fs.existsSync(script)) {
      throw new InputError('the gradient worker script is missing (build the trainer: npx nx run trainer:build, or set workers to 1)', {
        code: 'E_FILE_MISSING',
        file: script ?? path.join(__dirname, GRADIENT_WORKER_FILE),
        found: 'missing',
      });
    }
    const started = await Promise.allSettled(Array.from({ length: options.threads }, (_, i) => GradientThread.start(script, options.init, i + 1)));
    const ok = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    const failed = started.find((s) => s.status === 'rejected');
    if (failed) {
      await Promise.all(ok.map((t) => t.close()));
      throw (failed as PromiseRejectedResult).reason;
    }
    return new GradientWorkerPool(ok);
  }

  /** Worker threads (not counting the caller). */
  get size(): number {
    return this.threads.length;
  }

  /** Sends each shard with its own copy of the weights to one worker; resolves in shard order. */
  gradients(weights: Float32Array, shards: readonly TeacherShard[]): Promise<Array<ShardGradients & { numTensors: number }>> {
    if (shards.length > this.threads.length) {
      return Promise.reject(new AptpError('more shards than worker threads', { code: 'E_WORKER', field: 'shards', expected: `≤ ${this.threads.length}`, found: shards.length }));
    }
    return Promise.all(shards.map((s, i) => this.threads[i]!.gradients(weights.slice(), s)));
  }

  async close(): Promise<void> {
    await Promise.all(this.threads.map((t) => t.close()));
  }
}
