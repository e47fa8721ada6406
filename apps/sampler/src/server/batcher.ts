import { z } from 'zod';
import { AptpError, ConfigError, InputError } from '@aptp/core';
import type { ExpertInfo, GeneratedImage, ImageEngine, ImageRequest } from './engine';
import type { QueueState, ServerMetrics } from './metrics';

/**
 * Dynamic batching per expert (APTP.md §9: a batch only holds prompts of one expert). Accepted requests wait in a
 * bounded routing queue, are routed in groups, then wait in their expert's bounded queue. One worker runs the
 * engine, one call at a time (the CPU is the bottleneck): it routes whatever waits to be routed, then runs the
 * expert queue whose oldest request is oldest among the queues that are ready — full (`maxBatchSize`), or waiting
 * for `maxWaitMs`, or draining. Each request keeps its own seed; which requests share a batch never changes an image
 * (the engine's contract).
 */
export const batcherConfigSchema = z.strictObject({
  maxBatchSize: z.coerce
    .number()
    .int()
    .min(1)
    .max(256)
    .default(8)
    .describe('largest batch of one expert per generate call (APTP.md §9: image_generation_batch_size 8)'),
  maxWaitMs: z.coerce.number().min(0).max(600_000).default(50).describe('how long a request waits for its batch to fill before it runs in a smaller one (ms)'),
  queueCapacity: z.coerce.number().int().min(1).max(1_000_000).default(64).describe('requests that may wait per expert (the routing queue holds this many per expert); more get 429'),
});
export type BatcherConfig = z.infer<typeof batcherConfigSchema>;

/** Parses the keys of `schema` out of `value` (other keys are ignored); a bad value is a `ConfigError` naming it. */
export function parseOptions<S extends z.ZodObject>(schema: S, value: object): z.infer<S> {
  const picked = Object.fromEntries(Object.keys(schema.shape).filter((k) => k in value).map((k) => [k, (value as Record<string, unknown>)[k]]));
  const r = schema.safeParse(picked);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const field = issue.path.map(String).join('.');
  throw new ConfigError(issue.message, { code: 'E_CONFIG_FIELD', field, found: picked[field] });
}

/** `BatcherConfig` (missing keys take the schema defaults) plus internal knobs. */
export interface BatcherOptions extends Partial<BatcherConfig> {
  /** Most prompts per `route` call. */
  routeBatchSize?: number;
}

export interface SubmitOptions {
  /** Force this expert (skips routing). */
  expert?: number;
  /** Reject with `E_TIMEOUT` after this long; a request that has not started leaves its queue. */
  timeoutMs?: number;
  /** Aborting cancels the request (`E_CANCELLED`); a request that has not started leaves its queue. */
  signal?: AbortSignal;
}

export interface BatchResult {
  image: GeneratedImage;
  expertId: number;
  /** MACs of one UNet call of the expert (a count). */
  macs: number;
  /** false when the request forced its expert. */
  routed: boolean;
  /** Requests in the generate call that made this image. */
  batchSize: number;
  /** Acceptance to the start of the batch. */
  queueMs: number;
  /** Duration of the generate call. */
  generateMs: number;
}

/** `AptpError.code` of rejected submissions; `http.ts` maps them to status codes. */
export const BATCHER_ERROR = {
  queueFull: 'E_QUEUE_FULL',
  timeout: 'E_TIMEOUT',
  cancelled: 'E_CANCELLED',
  shuttingDown: 'E_SHUTTING_DOWN',
  engine: 'E_ENGINE',
} as const;

type Stage = 'routing' | 'route-call' | 'queued' | 'running' | 'settled';

interface Job {
  seq: number;
  request: ImageRequest;
  expertId?: number;
  routed: boolean;
  acceptedAt: number;
  stage: Stage;
  resolve(r: BatchResult): void;
  reject(e: AptpError): void;
  cleanup(): void;
}

export class ExpertBatcher {
  private readonly engine: ImageEngine;
  private readonly options: BatcherConfig & { routeBatchSize: number };
  private readonly experts: ReadonlyMap<number, ExpertInfo>;
  private readonly routingQueue: Job[] = [];
  private readonly queues = new Map<number, Job[]>();
  private readonly metrics?: ServerMetrics;
  private readonly now: () => number;
  private seq = 0;
  private running = false;
  private scheduled = false;
  private accepting = true;
  private inFlight = 0;
  private wake?: () => void;
  private idleWaiters: (() => void)[] = [];

  constructor(engine: ImageEngine, options: BatcherOptions, metrics?: ServerMetrics, now: () => number = () => performance.now()) {
    this.engine = engine;
    this.options = { ...parseOptions(batcherConfigSchema, options), routeBatchSize: options.routeBatchSize ?? 64 };
    this.metrics = metrics;
    this.now = now;
    const experts = new Map<number, ExpertInfo>();
    for (const e of engine.info.experts) {
      if (!Number.isInteger(e.id) || experts.has(e.id)) throw new AptpError('expert ids must be distinct integers', { code: 'E_ENGINE', field: 'info.experts', found: e.id });
      experts.set(e.id, e);
      this.queues.set(e.id, []);
    }
    if (experts.size === 0) throw new AptpError('the engine has no experts', { code: 'E_ENGINE', field: 'info.experts', found: 0 });
    this.experts = experts;
  }

  /** Queues one request; resolves with its image and routing info, or rejects with an `AptpError` (`BATCHER_ERROR`). */
  submit(request: ImageRequest, options: SubmitOptions = {}): Promise<BatchResult> {
    const cap = options.expert === undefined ? this.routingCapacity() : this.options.queueCapacity;
    if (!this.accepting) return Promise.reject(new AptpError('server is shutting down', { code: BATCHER_ERROR.shuttingDown }));
    if (options.signal?.aborted) return Promise.reject(new AptpError('request cancelled by the client', { code: BATCHER_ERROR.cancelled }));
    let queue = this.routingQueue;
    if (options.expert !== undefined) {
      const q = this.queues.get(options.expert);
      if (!q) return Promise.reject(new InputError('unknown expert', { code: 'E_REQUEST', field: 'expert', expected: [...this.experts.keys()], found: options.expert }));
      queue = q;
    }
    if (queue.length >= cap) return Promise.reject(this.queueFull(options.expert));
    return new Promise<BatchResult>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onAbort = (): void => this.drop(job, new AptpError('request cancelled by the client', { code: BATCHER_ERROR.cancelled }), 'cancelled');
      const job: Job = {
        seq: this.seq++,
        request,
        expertId: options.expert,
        routed: options.expert === undefined,
        acceptedAt: this.now(),
        stage: options.expert === undefined ? 'routing' : 'queued',
        resolve,
        reject,
        cleanup: () => {
          if (timer) clearTimeout(timer);
          options.signal?.removeEventListener('abort', onAbort);
        },
      };
      if (options.timeoutMs !== undefined) {
        const ms = options.timeoutMs;
        timer = setTimeout(() => {
          const where = job.stage === 'running' ? 'while generating' : job.stage === 'route-call' ? 'while routing' : 'waiting in the queue';
          this.drop(job, new AptpError(`timed out after ${ms} ms ${where}`, { code: BATCHER_ERROR.timeout }), 'timeout');
        }, ms);
      }
      options.signal?.addEventListener('abort', onAbort, { once: true });
      queue.push(job);
      this.kick();
    });
  }

  /** Stops accepting (`E_SHUTTING_DOWN`), runs everything queued without waiting for batches to fill, resolves when idle. */
  drain(): Promise<void> {
    this.accepting = false;
    if (this.isIdle()) return Promise.resolve();
    const done = new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    this.kick();
    return done;
  }

  get isAccepting(): boolean {
    return this.accepting;
  }

  queueState(): QueueState {
    return {
      routing: this.routingQueue.length,
      experts: new Map([...this.queues].map(([id, q]) => [id, q.length])),
      inFlight: this.inFlight,
    };
  }

  /** The routing queue holds as many requests as all expert queues together. */
  private routingCapacity(): number {
    return this.options.queueCapacity * this.queues.size;
  }

  private queueFull(expert: number | undefined): AptpError {
    return new AptpError('queue full, retry later', {
      code: BATCHER_ERROR.queueFull,
      field: expert === undefined ? 'routing queue' : `expert ${expert} queue`,
      expected: `at most ${expert === undefined ? this.routingCapacity() : this.options.queueCapacity} waiting`,
    });
  }

  private isIdle(): boolean {
    return !this.running && !this.scheduled && this.routingQueue.length === 0 && [...this.queues.values()].every((q) => q.length === 0);
  }

  /** Starts the worker on the next turn of the event loop (so requests of one tick share a route call), or wakes it. */
  private kick(): void {
    if (this.running) {
      this.wake?.();
      return;
    }
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.loop();
    });
  }

  private settle(job: Job, outcome: { result: BatchResult } | { error: AptpError }): void {
    if (job.stage === 'settled') return;
    job.stage = 'settled';
    job.cleanup();
    if ('result' in outcome) job.resolve(outcome.result);
    else job.reject(outcome.error);
  }

  /** Rejects a job; one that has not started leaves its queue so it is never generated. */
  private drop(job: Job, error: AptpError, reason: string): void {
    if (job.stage === 'settled') return;
    const queue = job.stage === 'routing' ? this.routingQueue : job.stage === 'queued' ? this.queues.get(job.expertId!) : undefined;
    if (queue) {
      const i = queue.indexOf(job);
      if (i >= 0) queue.splice(i, 1);
    }
    this.metrics?.dropped.inc({ reason });
    this.settle(job, { error });
    if (this.isIdle()) this.notifyIdle();
  }

  private notifyIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    }).finally(() => {
      this.wake = undefined;
    });
  }

  private async loop(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      let justRouted = false;
      for (;;) {
        const next = this.nextBatch(this.now());
        // Route what waits, but alternate with ready batches so a steady stream of arrivals cannot starve generation.
        if (this.routingQueue.length > 0 && !(justRouted && next.expert !== undefined)) {
          await this.routeNext();
          justRouted = true;
          continue;
        }
        justRouted = false;
        if (next.expert !== undefined) {
          await this.runBatch(next.expert);
          continue;
        }
        if (next.waitMs === undefined) break;
        await this.sleep(next.waitMs);
      }
    } finally {
      this.running = false;
      if (this.isIdle()) this.notifyIdle();
      else this.kick();
    }
  }

  /** The ready expert queue with the oldest head, else how long until the first head's wait runs out. */
  private nextBatch(t: number): { expert?: number; waitMs?: number } {
    const { maxBatchSize, maxWaitMs } = this.options;
    let best: { expert: number; seq: number } | undefined;
    let waitMs: number | undefined;
    for (const [id, q] of this.queues) {
      const head = q[0];
      if (!head) continue;
      const waited = t - head.acceptedAt;
      if (q.length >= maxBatchSize || !this.accepting || waited >= maxWaitMs) {
        if (!best || head.seq < best.seq) best = { expert: id, seq: head.seq };
      } else {
        waitMs = Math.min(waitMs ?? Infinity, Math.max(1, maxWaitMs - waited));
      }
    }
    return best ? { expert: best.expert } : { waitMs };
  }

  private engineError(what: string, err: unknown): AptpError {
    const message = err instanceof Error ? err.message : String(err);
    return new AptpError(`${what} failed: ${message}`, { code: BATCHER_ERROR.engine, cause: err });
  }

  private failAll(jobs: Job[], error: AptpError): void {
    for (const j of jobs) {
      if (j.stage !== 'settled') this.metrics?.dropped.inc({ reason: 'error' });
      this.settle(j, { error });
    }
  }

  private async routeNext(): Promise<void> {
    const jobs = this.routingQueue.splice(0, this.options.routeBatchSize);
    for (const j of jobs) j.stage = 'route-call';
    this.inFlight = jobs.length;
    const start = this.now();
    let ids: number[];
    try {
      ids = await this.engine.route(jobs.map((j) => j.request.prompt));
      if (!Array.isArray(ids) || ids.length !== jobs.length) {
        throw new AptpError('route returned the wrong number of expert ids', { code: BATCHER_ERROR.engine, expected: jobs.length, found: Array.isArray(ids) ? ids.length : typeof ids });
      }
      const unknown = ids.find((id) => !this.queues.has(id));
      if (unknown !== undefined) throw new AptpError('route returned an unknown expert id', { code: BATCHER_ERROR.engine, expected: [...this.experts.keys()], found: unknown });
    } catch (err) {
      this.failAll(jobs, this.engineError('route', err));
      return;
    } finally {
      this.inFlight = 0;
      this.metrics?.routeDuration.observe({}, (this.now() - start) / 1000);
    }
    jobs.forEach((job, i) => {
      if (job.stage === 'settled') return; // timed out or cancelled during the call
      const id = ids[i]!;
      const q = this.queues.get(id)!;
      if (q.length >= this.options.queueCapacity) {
        this.metrics?.dropped.inc({ reason: 'queue_full' });
        this.settle(job, { error: this.queueFull(id) });
        return;
      }
      job.expertId = id;
      job.stage = 'queued';
      // Keep each queue in arrival order (forced requests may have been queued meanwhile).
      let at = q.length;
      while (at > 0 && q[at - 1]!.seq > job.seq) at--;
      q.splice(at, 0, job);
    });
  }

  private async runBatch(expertId: number): Promise<void> {
    const jobs = this.queues.get(expertId)!.splice(0, this.options.maxBatchSize);
    const expert = String(expertId);
    const start = this.now();
    for (const j of jobs) {
      j.stage = 'running';
      this.metrics?.queueWait.observe({ expert }, (start - j.acceptedAt) / 1000);
    }
    this.inFlight = jobs.length;
    this.metrics?.batchSize.observe({ expert }, jobs.length);
    let images: GeneratedImage[];
    let generateMs: number;
    try {
      images = await this.engine.generate(
        expertId,
        jobs.map((j) => j.request),
      );
      if (!Array.isArray(images) || images.length !== jobs.length) {
        throw new AptpError('generate returned the wrong number of images', { code: BATCHER_ERROR.engine, expected: jobs.length, found: Array.isArray(images) ? images.length : typeof images });
      }
      const bad = images.findIndex((im) => !(im?.png instanceof Uint8Array));
      if (bad >= 0) throw new AptpError('generate returned an image without PNG bytes', { code: BATCHER_ERROR.engine, field: `images[${bad}]` });
    } catch (err) {
      this.failAll(jobs, this.engineError(`generate (expert ${expertId}, batch of ${jobs.length})`, err));
      return;
    } finally {
      generateMs = this.now() - start;
      this.inFlight = 0;
      this.metrics?.batchDuration.observe({ expert }, generateMs / 1000);
    }
    const macs = this.experts.get(expertId)!.macs;
    jobs.forEach((job, i) => {
      this.metrics?.images.inc({ expert });
      this.settle(job, {
        result: { image: images[i]!, expertId, macs, routed: job.routed, batchSize: jobs.length, queueMs: start - job.acceptedAt, generateMs },
      });
    });
  }
}
