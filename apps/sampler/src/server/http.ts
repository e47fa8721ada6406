import * as http from 'node:http';
import { randomInt } from 'node:crypto';
import type { AddressInfo, Socket } from 'node:net';
import { z } from 'zod';
import { AptpError, ConfigError } from '@aptp/core';
import { BATCHER_ERROR, batcherConfigSchema, ExpertBatcher, parseOptions } from './batcher';
import type { BatchResult, BatcherConfig } from './batcher';
import type { EngineInfo, ImageEngine, ImageRequest } from './engine';
import { createServerMetrics, PROMETHEUS_CONTENT_TYPE } from './metrics';
import type { ServerMetrics } from './metrics';

/**
 * The sampler's HTTP server (node:http, issue 8 §3):
 *   POST /v1/images  {prompt, seed?, steps?, guidance?, size?, expert?, responseFormat?: 'png'|'json'}
 *   GET  /healthz    200 {status:'ok'} (503 while draining)
 *   GET  /metrics    Prometheus text
 * Requests go through `ExpertBatcher` (dynamic batching per expert). Status codes: 400 bad request (one-line message
 * naming the field), 404, 405, 413 body too large, 429 queue full, 503 shutting down, 504 past the deadline.
 */
export const serverConfigSchema = z.strictObject({
  host: z.string().min(1).default('127.0.0.1').describe('address to listen on (0.0.0.0: every interface)'),
  port: z.coerce.number().int().min(0).max(65535).default(8080).describe('TCP port (0: any free port)'),
  timeoutMs: z.coerce
    .number()
    .int()
    .min(1)
    .default(300_000)
    .describe('deadline per image request from its arrival (ms); then 504, and a request that has not started leaves its queue'),
  maxBodyBytes: z.coerce.number().int().min(64).default(65_536).describe('largest request body in bytes; larger gets 413'),
  maxPromptChars: z.coerce.number().int().min(1).default(2_000).describe('longest prompt in characters; longer gets 400'),
});
export type ServerConfig = z.infer<typeof serverConfigSchema>;

export type ImageServerOptions = Partial<ServerConfig & BatcherConfig> & {
  /** Most prompts per route call. */
  routeBatchSize?: number;
};

const SIZE_FORMAT = /^(\d+)x(\d+)$/;

/** The body schema of `POST /v1/images` for this engine (its experts, defaults and limits). */
export function imageRequestSchema(info: EngineInfo, maxPromptChars: number) {
  const ids = info.experts.map((e) => e.id);
  const { maxSteps, maxSize, sizeMultiple } = info.limits;
  const sideOk = (v: number): boolean => Number.isInteger(v) && v >= sizeMultiple && v <= maxSize && v % sizeMultiple === 0;
  return z.strictObject({
    prompt: z
      .string({ error: (iss) => (iss.input === undefined ? 'required' : 'expected a string') })
      .max(maxPromptChars, `longer than ${maxPromptChars} characters`)
      .refine((s) => s.trim().length > 0, 'must not be empty'),
    seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
    steps: z.number().int().min(1).max(maxSteps).optional(),
    guidance: z.number().min(0).max(100).optional(),
    size: z
      .union([z.number(), z.string()], { error: 'expected an integer or "WIDTHxHEIGHT"' })
      .optional()
      .transform((v, ctx) => {
        if (v === undefined) return undefined;
        const m = typeof v === 'string' ? SIZE_FORMAT.exec(v) : null;
        const [width, height] = typeof v === 'number' ? [v, v] : m ? [Number(m[1]), Number(m[2])] : [NaN, NaN];
        if (!sideOk(width) || !sideOk(height)) {
          ctx.issues.push({
            code: 'custom',
            input: v,
            message: `expected a multiple of ${sizeMultiple} from ${sizeMultiple} to ${maxSize} (or "WIDTHxHEIGHT"), found ${JSON.stringify(v)}`,
          });
          return z.NEVER;
        }
        return { width, height };
      }),
    expert: z
      .number()
      .int()
      .refine((id) => ids.includes(id), { error: `unknown expert; expected one of ${ids.join(', ')}` })
      .optional(),
    responseFormat: z.enum(['png', 'json']).default('png'),
  });
}

/** Bounded label values for the request metrics. */
const ROUTES: Record<string, readonly string[]> = {
  '/v1/images': ['POST'],
  '/healthz': ['GET', 'HEAD'],
  '/metrics': ['GET', 'HEAD'],
};
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS']);

interface ErrorBody {
  code: string;
  message: string;
  field?: string;
}

function send(res: http.ServerResponse, status: number, body: string | Uint8Array, headers: http.OutgoingHttpHeaders): void {
  const bytes = typeof body === 'string' ? Buffer.from(body) : body;
  res.writeHead(status, { ...headers, 'Content-Length': bytes.byteLength });
  res.end(bytes);
}

function sendJson(res: http.ServerResponse, status: number, value: unknown, headers: http.OutgoingHttpHeaders = {}): void {
  send(res, status, `${JSON.stringify(value)}\n`, { 'Content-Type': 'application/json; charset=utf-8', ...headers });
}

function sendError(res: http.ServerResponse, status: number, error: ErrorBody, headers: http.OutgoingHttpHeaders = {}): void {
  sendJson(res, status, { error }, headers);
}

type Body = { ok: Buffer } | { tooLarge: true } | { aborted: true };

/** Reads the body up to `maxBytes`; stops early (without buffering more) when it is larger. */
function readBody(req: http.IncomingMessage, maxBytes: number): Promise<Body> {
  return new Promise((resolve) => {
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > maxBytes) {
      resolve({ tooLarge: true });
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (b: Body): void => {
      if (done) return;
      done = true;
      resolve(b);
    };
    req.on('data', (chunk: Buffer) => {
      if (done) return;
      size += chunk.byteLength;
      if (size > maxBytes) finish({ tooLarge: true });
      else chunks.push(chunk);
    });
    req.on('end', () => finish({ ok: Buffer.concat(chunks) }));
    req.on('error', () => finish({ aborted: true }));
    req.on('close', () => finish({ aborted: true }));
  });
}

/** `{field, message}` of the first zod issue: one line naming the field. */
function describeIssue(error: z.ZodError): ErrorBody {
  const issue = error.issues[0]!;
  const field = issue.code === 'unrecognized_keys' ? issue.keys.join(', ') : issue.path.length ? issue.path.map(String).join('.') : 'body';
  return { code: 'E_REQUEST', field, message: `${field}: ${issue.message}` };
}

export interface ListenAddress {
  host: string;
  port: number;
  url: string;
}

export class ImageServer {
  readonly http: http.Server;
  readonly batcher: ExpertBatcher;
  readonly metrics: ServerMetrics;
  readonly config: ServerConfig;
  private readonly engineInfo: EngineInfo;
  private readonly requestSchema: ReturnType<typeof imageRequestSchema>;
  private readonly pending = new Set<Promise<void>>();
  private readonly responses = new Set<http.ServerResponse>();
  private readonly sockets = new Set<Socket>();
  private draining = false;
  private closing?: Promise<void>;

  constructor(engine: ImageEngine, options: ImageServerOptions = {}) {
    this.config = parseOptions(serverConfigSchema, options);
    const batcherConfig = parseOptions(batcherConfigSchema, options);
    this.engineInfo = engine.info;
    this.requestSchema = imageRequestSchema(engine.info, this.config.maxPromptChars);
    let batcher: ExpertBatcher | undefined;
    this.metrics = createServerMetrics({ maxBatchSize: batcherConfig.maxBatchSize, queueState: () => batcher!.queueState() });
    batcher = new ExpertBatcher(engine, { ...batcherConfig, routeBatchSize: options.routeBatchSize }, this.metrics);
    this.batcher = batcher;
    this.http = http.createServer((req, res) => {
      // Pending until the response is flushed or the connection is gone, not merely ended: a pipelined response waits
      // behind the one before it, and a large PNG may still be buffered after `end()`. A response queued behind a
      // pipelined one never emits 'close' if the socket goes first, hence both events.
      this.responses.add(res);
      const closed = new Promise<void>((resolve) => {
        const done = (): void => {
          this.responses.delete(res);
          res.off('close', done);
          req.socket.off('close', done);
          resolve();
        };
        res.once('close', done);
        req.socket.once('close', done);
      });
      const handled = this.handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) sendError(res, 500, { code: 'E_INTERNAL', message: err instanceof Error ? err.message : String(err) });
        else res.destroy();
      });
      const p = Promise.all([handled, closed]).then(() => undefined);
      this.pending.add(p);
      void p.finally(() => this.pending.delete(p));
    });
    this.http.on('connection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
  }

  /** Starts listening on `host:port` (port 0: any free port). A port in use is a `ConfigError` naming `--port`. */
  listen(): Promise<ListenAddress> {
    const { host, port } = this.config;
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => {
        reject(new ConfigError(`cannot listen on ${host}:${port}: ${err.message}`, { code: 'E_LISTEN', field: '--port', found: port, cause: err }));
      };
      this.http.once('error', onError);
      this.http.listen(port, host, () => {
        this.http.off('error', onError);
        const a = this.http.address() as AddressInfo;
        const shown = a.family === 'IPv6' ? `[${a.address}]` : a.address;
        resolve({ host: a.address, port: a.port, url: `http://${shown}:${a.port}` });
      });
    });
  }

  /**
   * Graceful shutdown, idempotent: stop accepting connections (Node also closes idle kept-alive ones), mark every
   * response still to come `Connection: close`, run every queued request, wait until every response is flushed,
   * then end the remaining connections (a FIN after their last bytes; destroyed if still open a second later).
   */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  get isDraining(): boolean {
    return this.draining;
  }

  private async shutdown(): Promise<void> {
    this.draining = true;
    const closed = new Promise<void>((resolve) => {
      if (!this.http.listening) resolve();
      else this.http.close(() => resolve());
    });
    for (const res of this.responses) if (!res.headersSent) res.setHeader('Connection', 'close');
    await this.batcher.drain();
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
    // Not closeIdleConnections: it destroys sockets, dropping bytes still in their write buffers.
    for (const socket of this.sockets) socket.end();
    const grace = setTimeout(() => this.http.closeAllConnections(), 1000);
    try {
      await closed;
    } finally {
      clearTimeout(grace);
    }
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const arrival = performance.now();
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    const allowed = ROUTES[path];
    const route = allowed ? path : 'other';
    const method = METHODS.has(req.method ?? '') ? req.method! : 'OTHER';
    res.on('close', () => {
      // 499 (client closed the connection before the response was written), as nginx counts it.
      const code = res.writableFinished ? String(res.statusCode) : '499';
      this.metrics.httpRequests.inc({ route, method, code });
      this.metrics.httpDuration.observe({ route }, (performance.now() - arrival) / 1000);
    });
    if (this.draining) res.setHeader('Connection', 'close');
    if (!allowed) {
      sendError(res, 404, { code: 'E_NOT_FOUND', message: `no route ${path}; expected POST /v1/images, GET /healthz or GET /metrics` });
      return;
    }
    if (!allowed.includes(req.method ?? '')) {
      sendError(res, 405, { code: 'E_METHOD', message: `${path}: method ${req.method} not allowed; expected ${allowed.join(' or ')}` }, { Allow: allowed.join(', ') });
      return;
    }
    if (path === '/healthz') return this.healthz(res);
    if (path === '/metrics') {
      send(res, 200, this.metrics.registry.render(), { 'Content-Type': PROMETHEUS_CONTENT_TYPE });
      return;
    }
    return this.images(req, res, arrival);
  }

  private healthz(res: http.ServerResponse): void {
    const q = this.batcher.queueState();
    const queued = q.routing + [...q.experts.values()].reduce((a, b) => a + b, 0);
    sendJson(res, this.draining ? 503 : 200, {
      status: this.draining ? 'draining' : 'ok',
      experts: this.engineInfo.experts.map((e) => e.id),
      queued,
      inFlight: q.inFlight,
    });
  }

  private async images(req: http.IncomingMessage, res: http.ServerResponse, arrival: number): Promise<void> {
    if (this.draining) {
      sendError(res, 503, { code: BATCHER_ERROR.shuttingDown, message: 'server is shutting down' });
      return;
    }
    const body = await readBody(req, this.config.maxBodyBytes);
    if ('aborted' in body) return;
    if ('tooLarge' in body) {
      sendError(res, 413, { code: 'E_BODY_TOO_LARGE', field: 'body', message: `body: larger than ${this.config.maxBodyBytes} bytes` }, { Connection: 'close' });
      return;
    }
    let json: unknown;
    try {
      json = JSON.parse(body.ok.toString('utf8'));
    } catch (err) {
      sendError(res, 400, { code: 'E_REQUEST', field: 'body', message: `body: not valid JSON (${(err as Error).message})` });
      return;
    }
    const parsed = this.requestSchema.safeParse(json);
    if (!parsed.success) {
      sendError(res, 400, describeIssue(parsed.error));
      return;
    }
    const p = parsed.data;
    const d = this.engineInfo.defaults;
    const request: ImageRequest = {
      prompt: p.prompt,
      seed: p.seed ?? randomInt(0, 2 ** 32),
      steps: p.steps ?? d.steps,
      guidance: p.guidance ?? d.guidance,
      width: p.size?.width ?? d.width,
      height: p.size?.height ?? d.height,
    };
    const cancel = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) cancel.abort();
    });
    let result: BatchResult;
    try {
      result = await this.batcher.submit(request, {
        expert: p.expert,
        timeoutMs: Math.max(1, Math.round(this.config.timeoutMs - (performance.now() - arrival))),
        signal: cancel.signal,
      });
    } catch (err) {
      this.submitFailed(res, err);
      return;
    }
    const latencyMs = performance.now() - arrival;
    const ms = (v: number): number => Math.round(v * 10) / 10;
    const routing = {
      expert: result.expertId,
      routed: result.routed,
      macs: result.macs,
      batchSize: result.batchSize,
      queueMs: ms(result.queueMs),
      generateMs: ms(result.generateMs),
      latencyMs: ms(latencyMs),
    };
    const png = result.image.png;
    if (p.responseFormat === 'json') {
      sendJson(res, 200, {
        image: Buffer.from(png.buffer, png.byteOffset, png.byteLength).toString('base64'),
        mimeType: 'image/png',
        ...request,
        ...routing,
        ...(result.image.info ? { info: result.image.info } : {}),
      });
      return;
    }
    send(res, 200, png, {
      'Content-Type': 'image/png',
      'X-Aptp-Expert': String(routing.expert),
      'X-Aptp-Routed': String(routing.routed),
      'X-Aptp-Macs': String(routing.macs),
      'X-Aptp-Seed': String(request.seed),
      'X-Aptp-Batch-Size': String(routing.batchSize),
      'X-Aptp-Queue-Ms': String(routing.queueMs),
      'X-Aptp-Generate-Ms': String(routing.generateMs),
      'X-Aptp-Latency-Ms': String(routing.latencyMs),
    });
  }

  private submitFailed(res: http.ServerResponse, err: unknown): void {
    const e = err instanceof AptpError ? err : new AptpError(err instanceof Error ? err.message : String(err), { cause: err });
    const body: ErrorBody = { code: e.code, message: e.message, ...(e.field ? { field: e.field } : {}) };
    switch (e.code) {
      case BATCHER_ERROR.cancelled:
        return; // the client is gone
      case BATCHER_ERROR.queueFull:
        return sendError(res, 429, body, { 'Retry-After': '1' });
      case BATCHER_ERROR.timeout:
        return sendError(res, 504, body);
      case BATCHER_ERROR.shuttingDown:
        return sendError(res, 503, body, { Connection: 'close' });
      case 'E_REQUEST':
        return sendError(res, 400, body);
      default:
        return sendError(res, 500, body);
    }
  }
}
