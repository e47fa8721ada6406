import * as net from 'node:net';
import type { ImageRequest } from './engine';
import { FakeEngine, fakeImage, fakeRoute } from './fakeEngine';
import { ImageServer } from './http';
import type { ImageServerOptions } from './http';
import { parsePrometheusText } from './metrics';
import type { ParsedMetrics } from './metrics';
import { httpRequest, pngSize, waitFor } from './testClient';

const servers: ImageServer[] = [];

async function start(engine: FakeEngine, options: ImageServerOptions = {}): Promise<{ server: ImageServer; url: string }> {
  const server = new ImageServer(engine, { host: '127.0.0.1', port: 0, maxBatchSize: 4, maxWaitMs: 20, queueCapacity: 16, timeoutMs: 5000, maxBodyBytes: 1024, ...options });
  servers.push(server);
  const { url } = await server.listen();
  return { server, url };
}

afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
});

const defaults = (engine: FakeEngine, body: Partial<ImageRequest> & { prompt: string }): ImageRequest => ({
  seed: 0,
  steps: engine.info.defaults.steps,
  guidance: engine.info.defaults.guidance,
  width: engine.info.defaults.width,
  height: engine.info.defaults.height,
  ...body,
});

async function scrape(url: string): Promise<ParsedMetrics> {
  const r = await httpRequest(url, 'GET', '/metrics');
  expect(r.status).toBe(200);
  expect(r.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8');
  return parsePrometheusText(r.body.toString('utf8'));
}

const total = (m: ParsedMetrics, name: string, where: Record<string, string> = {}): number =>
  m.samples.filter((s) => s.name === name && Object.entries(where).every(([k, v]) => s.labels[k] === v)).reduce((a, s) => a + s.value, 0);

describe('POST /v1/images', () => {
  const engine = new FakeEngine({ experts: 3, generateDelayMs: 10 });
  let url = '';
  beforeAll(async () => {
    ({ url } = await start(engine, { maxPromptChars: 500 }));
  });

  it('returns the PNG of the routed expert, with the routing info in headers', async () => {
    const body = { prompt: 'a small red house', seed: 42, steps: 6, guidance: 3, size: '16x24' };
    const r = await httpRequest(url, 'POST', '/v1/images', body);
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('image/png');
    const expert = fakeRoute(body.prompt, 3);
    expect(r.headers['x-aptp-expert']).toBe(String(expert));
    expect(r.headers['x-aptp-routed']).toBe('true');
    expect(r.headers['x-aptp-macs']).toBe(String(engine.info.experts[expert]!.macs));
    expect(r.headers['x-aptp-seed']).toBe('42');
    expect(pngSize(r.body)).toEqual({ width: 16, height: 24 });
    const expected = fakeImage(expert, { prompt: body.prompt, seed: 42, steps: 6, guidance: 3, width: 16, height: 24 });
    expect(r.body.equals(Buffer.from(expected))).toBe(true);
  });

  it('returns JSON with base64 PNG, the resolved request and routing info; a forced expert is not routed', async () => {
    const r = await httpRequest(url, 'POST', '/v1/images', { prompt: 'e0: a cat', seed: 7, expert: 2, size: 16, responseFormat: 'json' });
    expect(r.status).toBe(200);
    const j = r.json<Record<string, unknown> & { image: string; latencyMs: number; generateMs: number; queueMs: number }>();
    expect(j).toMatchObject({ mimeType: 'image/png', prompt: 'e0: a cat', seed: 7, steps: 4, guidance: 7.5, width: 16, height: 16 });
    expect(j).toMatchObject({ expert: 2, routed: false, macs: engine.info.experts[2]!.macs, batchSize: 1, info: { scheduler: 'fake' } });
    expect(j.latencyMs).toBeGreaterThanOrEqual(j.generateMs);
    expect(j.generateMs).toBeGreaterThanOrEqual(9);
    const png = Buffer.from(j.image, 'base64');
    expect(png.equals(Buffer.from(fakeImage(2, defaults(engine, { prompt: 'e0: a cat', seed: 7, width: 16, height: 16 }))))).toBe(true);
  });

  it('picks a seed when none is given and reports it, so the image can be reproduced', async () => {
    const a = await httpRequest(url, 'POST', '/v1/images', { prompt: 'a tree' });
    const seed = Number(a.headers['x-aptp-seed']);
    expect(Number.isInteger(seed) && seed >= 0).toBe(true);
    const b = await httpRequest(url, 'POST', '/v1/images', { prompt: 'a tree', seed });
    expect(b.body.equals(a.body)).toBe(true);
  });

  it('batches concurrent requests per expert; every image equals the one its request makes alone', async () => {
    const before = engine.generateCalls.length;
    const bodies = Array.from({ length: 12 }, (_, i) => ({ prompt: `e${i % 3}: thing ${i}`, seed: 100 + i, responseFormat: 'json' }));
    const rs = await Promise.all(bodies.map((b) => httpRequest(url, 'POST', '/v1/images', b)));
    const calls = engine.generateCalls.slice(before);
    expect(rs.map((r) => r.status)).toEqual(bodies.map(() => 200));
    expect(calls.reduce((a, c) => a + c.requests.length, 0)).toBe(12);
    expect(calls.every((c) => c.requests.length <= 4 && c.requests.every((q) => fakeRoute(q.prompt, 3) === c.expertId))).toBe(true);
    expect(calls.length).toBeLessThan(12); // batches actually formed
    expect(engine.maxConcurrentCalls).toBe(1);
    rs.forEach((r, i) => {
      const j = r.json<{ image: string; expert: number; batchSize: number }>();
      expect(j.expert).toBe(i % 3);
      expect(Buffer.from(j.image, 'base64').equals(Buffer.from(fakeImage(i % 3, defaults(engine, bodies[i]!))))).toBe(true);
    });
  });

  it.each([
    ['prompt', {}, /^prompt: required$/],
    ['prompt', { prompt: '   ' }, /^prompt: must not be empty$/],
    ['prompt', { prompt: 42 }, /^prompt: expected a string$/],
    ['prompt', { prompt: 'x'.repeat(501) }, /^prompt: longer than 500 characters$/],
    ['seed', { prompt: 'a', seed: -1 }, /^seed: /],
    ['seed', { prompt: 'a', seed: 1.5 }, /^seed: /],
    ['steps', { prompt: 'a', steps: 0 }, /^steps: /],
    ['steps', { prompt: 'a', steps: 51 }, /^steps: /],
    ['guidance', { prompt: 'a', guidance: 'high' }, /^guidance: /],
    ['size', { prompt: 'a', size: 12 }, /^size: expected a multiple of 8 from 8 to 64/],
    ['size', { prompt: 'a', size: '16x' }, /^size: expected a multiple of 8/],
    ['size', { prompt: 'a', size: 128 }, /^size: /],
    ['size', { prompt: 'a', size: true }, /^size: expected an integer or "WIDTHxHEIGHT"$/],
    ['expert', { prompt: 'a', expert: 3 }, /^expert: unknown expert; expected one of 0, 1, 2$/],
    ['responseFormat', { prompt: 'a', responseFormat: 'gif' }, /^responseFormat: /],
    ['style', { prompt: 'a', style: 'anime' }, /^style: /],
    ['body', [], /^body: /],
    ['body', 'null', /^body: /],
    ['body', '{"prompt": ', /^body: not valid JSON/],
  ])('400 names the field %s', async (field, body, message) => {
    const r = await httpRequest(url, 'POST', '/v1/images', body);
    expect(r.status).toBe(400);
    const e = r.json<{ error: { code: string; field: string; message: string } }>().error;
    expect(e.code).toBe('E_REQUEST');
    expect(e.field).toBe(field);
    expect(e.message).toMatch(message);
    expect(e.message).not.toContain('\n');
  });

  it('413 for a body over maxBodyBytes, declared or streamed', async () => {
    const big = { prompt: 'x'.repeat(1500) };
    const declared = await httpRequest(url, 'POST', '/v1/images', big);
    expect(declared.status).toBe(413);
    expect(declared.json<{ error: { field: string } }>().error.field).toBe('body');
    const streamed = await httpRequest(url, 'POST', '/v1/images', big, { chunked: true });
    expect(streamed.status).toBe(413);
    const small = await httpRequest(url, 'POST', '/v1/images', { prompt: 'y'.repeat(500) }, { chunked: true });
    expect(small.status).toBe(200);
  });

  it('404 for unknown paths, 405 (with Allow) for wrong methods', async () => {
    const nf = await httpRequest(url, 'GET', '/v2/images');
    expect(nf.status).toBe(404);
    expect(nf.json<{ error: { message: string } }>().error.message).toMatch(/no route \/v2\/images/);
    const get = await httpRequest(url, 'GET', '/v1/images');
    expect(get.status).toBe(405);
    expect(get.headers.allow).toBe('POST');
    const post = await httpRequest(url, 'POST', '/healthz', {});
    expect(post.status).toBe(405);
    expect(post.headers.allow).toBe('GET, HEAD');
  });

  it('GET /healthz reports ok and the experts', async () => {
    const r = await httpRequest(url, 'GET', '/healthz');
    expect(r.status).toBe(200);
    expect(r.json()).toEqual({ status: 'ok', experts: [0, 1, 2], queued: 0, inFlight: 0 });
  });
});

describe('overload, deadlines and errors', () => {
  it('429 with Retry-After when the expert queue is full; the accepted ones still finish', async () => {
    const engine = new FakeEngine({ experts: 2 });
    const { server, url } = await start(engine, { maxWaitMs: 60_000, queueCapacity: 2, maxBatchSize: 8 });
    const accepted = [0, 1].map((i) => httpRequest(url, 'POST', '/v1/images', { prompt: `p${i}`, expert: 1 }));
    await waitFor(() => server.batcher.queueState().experts.get(1) === 2);
    const r = await httpRequest(url, 'POST', '/v1/images', { prompt: 'p2', expert: 1 });
    expect(r.status).toBe(429);
    expect(r.headers['retry-after']).toBe('1');
    expect(r.json<{ error: { code: string } }>().error.code).toBe('E_QUEUE_FULL');
    await server.close(); // drains: the two queued requests run now
    expect((await Promise.all(accepted)).map((x) => x.status)).toEqual([200, 200]);
  });

  it('504 at the deadline; a request that had not started leaves its queue and is never generated', async () => {
    const engine = new FakeEngine({ experts: 2 });
    const { server, url } = await start(engine, { maxWaitMs: 60_000, timeoutMs: 60 });
    const t0 = performance.now();
    const r = await httpRequest(url, 'POST', '/v1/images', { prompt: 'e0: too slow' });
    expect(r.status).toBe(504);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(55);
    expect(r.json<{ error: { code: string; message: string } }>().error).toMatchObject({ code: 'E_TIMEOUT', message: expect.stringMatching(/waiting in the queue/) });
    expect(server.batcher.queueState().experts.get(0)).toBe(0);
    const m = await scrape(url);
    expect(total(m, 'aptp_requests_dropped_total', { reason: 'timeout' })).toBe(1);
    await server.close();
    expect(engine.generateCalls).toHaveLength(0);
  });

  it('a client that disconnects while queued is dropped from the queue', async () => {
    const engine = new FakeEngine({ experts: 1 });
    const { server, url } = await start(engine, { maxWaitMs: 60_000 });
    const ac = new AbortController();
    const gone = httpRequest(url, 'POST', '/v1/images', { prompt: 'bye' }, { signal: ac.signal });
    await waitFor(() => server.batcher.queueState().experts.get(0) === 1);
    ac.abort();
    await expect(gone).rejects.toThrow(/aborted/);
    await waitFor(() => server.batcher.queueState().experts.get(0) === 0, 2000, 'the request to leave the queue');
    const m = await scrape(url);
    expect(total(m, 'aptp_requests_dropped_total', { reason: 'cancelled' })).toBe(1);
    expect(total(m, 'aptp_http_requests_total', { route: '/v1/images', code: '499' })).toBe(1);
    await server.close();
    expect(engine.generateCalls).toHaveLength(0);
  });

  it('500 naming the expert when the engine fails', async () => {
    const { url } = await start(new FakeEngine({ experts: 2, failExpert: 0 }), { maxWaitMs: 0 });
    const r = await httpRequest(url, 'POST', '/v1/images', { prompt: 'e0: boom' });
    expect(r.status).toBe(500);
    expect(r.json<{ error: { code: string; message: string } }>().error).toEqual({ code: 'E_ENGINE', message: 'generate (expert 0, batch of 1) failed: expert 0 is broken' });
  });
});

describe('GET /metrics', () => {
  it('exposes queue depth per expert, batch sizes, latencies and requests by status, consistent with the traffic', async () => {
    const engine = new FakeEngine({ experts: 3, generateDelayMs: 5 });
    const { url } = await start(engine, { maxBatchSize: 4, maxWaitMs: 15 });
    const ok = await Promise.all(Array.from({ length: 9 }, (_, i) => httpRequest(url, 'POST', '/v1/images', { prompt: `e${i % 2}: m${i}` })));
    expect(ok.every((r) => r.status === 200)).toBe(true);
    for (const body of [{}, { prompt: '' }]) expect((await httpRequest(url, 'POST', '/v1/images', body)).status).toBe(400);
    expect((await httpRequest(url, 'GET', '/nowhere')).status).toBe(404);
    expect((await httpRequest(url, 'GET', '/healthz')).status).toBe(200);
    const m = await scrape(url);

    const types: Record<string, string> = {
      aptp_http_requests_total: 'counter',
      aptp_http_request_duration_seconds: 'histogram',
      aptp_batch_size: 'histogram',
      aptp_batch_duration_seconds: 'histogram',
      aptp_queue_wait_seconds: 'histogram',
      aptp_route_duration_seconds: 'histogram',
      aptp_images_total: 'counter',
      aptp_requests_dropped_total: 'counter',
      aptp_queue_depth: 'gauge',
      aptp_routing_queue_depth: 'gauge',
      aptp_in_flight_requests: 'gauge',
    };
    expect(Object.fromEntries(m.types)).toEqual(types);
    // every sample belongs to a declared family and carries exactly that family's labels
    const labelSets: Record<string, string[]> = {
      aptp_http_requests_total: ['code', 'method', 'route'],
      aptp_http_request_duration_seconds: ['route'],
      aptp_batch_size: ['expert'],
      aptp_batch_duration_seconds: ['expert'],
      aptp_queue_wait_seconds: ['expert'],
      aptp_route_duration_seconds: [],
      aptp_images_total: ['expert'],
      aptp_requests_dropped_total: ['reason'],
      aptp_queue_depth: ['expert'],
      aptp_routing_queue_depth: [],
      aptp_in_flight_requests: [],
    };
    for (const s of m.samples) {
      const family = s.name.replace(/_(bucket|sum|count)$/, '');
      const name = family in types ? family : s.name;
      expect(name in labelSets).toBe(true);
      const expected = [...labelSets[name]!, ...(s.name.endsWith('_bucket') ? ['le'] : [])].sort();
      expect(Object.keys(s.labels).sort()).toEqual(expected);
    }
    // histograms: cumulative buckets never decrease, +Inf equals _count
    for (const [name, type] of m.types) {
      if (type !== 'histogram') continue;
      const series = new Map<string, number[]>();
      for (const s of m.samples.filter((x) => x.name === `${name}_bucket`)) {
        const { le, ...rest } = s.labels;
        const key = JSON.stringify(rest);
        series.set(key, [...(series.get(key) ?? []), s.value]);
        if (le === '+Inf') expect(s.value).toBe(total(m, `${name}_count`, rest));
      }
      for (const counts of series.values()) for (let i = 1; i < counts.length; i++) expect(counts[i]).toBeGreaterThanOrEqual(counts[i - 1]!);
    }
    // counts equal the requests made (this scrape is counted after it is written)
    expect(total(m, 'aptp_http_requests_total', { route: '/v1/images', method: 'POST', code: '200' })).toBe(9);
    expect(total(m, 'aptp_http_requests_total', { route: '/v1/images', code: '400' })).toBe(2);
    expect(total(m, 'aptp_http_requests_total', { route: 'other', code: '404' })).toBe(1);
    expect(total(m, 'aptp_http_requests_total', { route: '/healthz', code: '200' })).toBe(1);
    expect(total(m, 'aptp_http_requests_total')).toBe(13);
    expect(total(m, 'aptp_http_request_duration_seconds_count', { route: '/v1/images' })).toBe(11);
    expect(total(m, 'aptp_images_total')).toBe(9);
    expect(total(m, 'aptp_images_total', { expert: '0' })).toBe(5);
    expect(total(m, 'aptp_batch_size_sum')).toBe(9);
    expect(total(m, 'aptp_batch_size_count')).toBe(engine.generateCalls.length);
    expect(total(m, 'aptp_queue_wait_seconds_count')).toBe(9);
    expect(total(m, 'aptp_batch_size_bucket', { le: '4' })).toBe(engine.generateCalls.length); // none above max batch
    expect(total(m, 'aptp_route_duration_seconds_count')).toBe(engine.routeCalls.length);
    expect(m.samples.filter((s) => s.name === 'aptp_queue_depth').map((s) => [s.labels.expert, s.value])).toEqual([['0', 0], ['1', 0], ['2', 0]]);
  });

  it('queue depth per expert shows waiting requests', async () => {
    const engine = new FakeEngine({ experts: 2 });
    const { server, url } = await start(engine, { maxWaitMs: 60_000 });
    const waiting = [httpRequest(url, 'POST', '/v1/images', { prompt: 'e1: a' }), httpRequest(url, 'POST', '/v1/images', { prompt: 'x', expert: 1 }), httpRequest(url, 'POST', '/v1/images', { prompt: 'e0: b' })];
    await waitFor(() => server.batcher.queueState().experts.get(1) === 2 && server.batcher.queueState().experts.get(0) === 1);
    const m = await scrape(url);
    expect(m.samples.filter((s) => s.name === 'aptp_queue_depth').map((s) => [s.labels.expert, s.value])).toEqual([['0', 1], ['1', 2]]);
    await server.close();
    expect((await Promise.all(waiting)).map((r) => r.status)).toEqual([200, 200, 200]);
  });
});

describe('graceful shutdown', () => {
  it('stops accepting connections, finishes every queued and running request, then closes', async () => {
    const engine = new FakeEngine({ experts: 2, generateDelayMs: 80 });
    const { server, url } = await start(engine, { maxBatchSize: 2, maxWaitMs: 60_000 });
    const prompts = ['e0: a', 'e0: b', 'e0: c', 'e1: d', 'e1: e', 'e1: f'];
    const responses = prompts.map((prompt, i) => httpRequest(url, 'POST', '/v1/images', { prompt, seed: i }));
    // two full batches start, the partial ones wait for company (maxWaitMs is a minute)
    // wait until the server has accepted all six (a request still in transit when close() starts may be reset)
    const accepted = (): number => engine.generateCalls.reduce((a, c) => a + c.requests.length, 0) + [...server.batcher.queueState().experts.values()].reduce((a, b) => a + b, 0);
    await waitFor(() => accepted() === 6 && server.batcher.queueState().inFlight > 0);
    const closing = server.close();
    expect(server.isDraining).toBe(true);
    await expect(httpRequest(url, 'GET', '/healthz')).rejects.toThrow(/ECONNREFUSED/);
    const rs = await Promise.all(responses);
    await closing;
    expect(rs.map((r) => r.status)).toEqual(prompts.map(() => 200));
    rs.forEach((r, i) => expect(r.body.equals(Buffer.from(fakeImage(fakeRoute(prompts[i]!, 2), defaults(engine, { prompt: prompts[i]!, seed: i }))))).toBe(true));
    expect(sizesOf(engine)).toEqual({ 0: [2, 1], 1: [2, 1] });
    expect(server.http.listening).toBe(false);
    await expect(httpRequest(url, 'POST', '/v1/images', { prompt: 'late' })).rejects.toThrow(/ECONNREFUSED/);
    await server.close(); // idempotent
  });
});

describe('graceful shutdown on a kept-alive connection', () => {
  it('a busy connection gets its response marked Connection: close, then ends; a request pipelined behind it never runs', async () => {
    const engine = new FakeEngine({ experts: 1, generateDelayMs: 150 });
    const { server, url } = await start(engine, { maxWaitMs: 0 });
    const socket = net.connect(Number(new URL(url).port), '127.0.0.1');
    let received = '';
    socket.on('data', (c: Buffer) => (received += c.toString('latin1')));
    const ended = new Promise((resolve) => socket.on('close', resolve));
    const post = (body: string): string => `POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
    socket.write(post('{"prompt":"first"}'));
    await waitFor(() => server.batcher.queueState().inFlight === 1);
    const closing = server.close();
    socket.write(post('{"prompt":"second"}'));
    await closing;
    await ended;
    expect([...received.matchAll(/^HTTP\/1\.1 (\d+)/gm)].map((m) => m[1])).toEqual(['200']);
    expect(received).toMatch(/\r\nConnection: close\r\n/);
    const png = Buffer.from(received.slice(received.indexOf('\r\n\r\n') + 4), 'latin1');
    expect(pngSize(png)).toEqual({ width: 8, height: 8 }); // the whole body arrived
    expect(engine.generateCalls.map((c) => c.requests.map((r) => r.prompt))).toEqual([['first']]);
  });
});

function sizesOf(engine: FakeEngine): Record<number, number[]> {
  const out: Record<number, number[]> = {};
  for (const c of engine.generateCalls) (out[c.expertId] ??= []).push(c.requests.length);
  return out;
}
