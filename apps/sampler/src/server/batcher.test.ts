import { AptpError } from '@aptp/core';
import { BATCHER_ERROR, ExpertBatcher } from './batcher';
import type { BatchResult } from './batcher';
import type { ImageRequest } from './engine';
import { FakeEngine, fakeImage, fakeRoute } from './fakeEngine';
import { waitFor } from './testClient';

const req = (prompt: string, seed = 1): ImageRequest => ({ prompt, seed, steps: 4, guidance: 7.5, width: 8, height: 8 });

async function rejection(p: Promise<unknown>): Promise<AptpError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(AptpError);
    return e as AptpError;
  }
  throw new Error('expected a rejection');
}

const sizesByExpert = (engine: FakeEngine): Record<number, number[]> => {
  const out: Record<number, number[]> = {};
  for (const c of engine.generateCalls) (out[c.expertId] ??= []).push(c.requests.length);
  return out;
};

describe('ExpertBatcher', () => {
  it('routes a burst in one call, batches only prompts of one expert, at most maxBatchSize each, one engine call at a time', async () => {
    const engine = new FakeEngine({ experts: 3, generateDelayMs: 3 });
    const b = new ExpertBatcher(engine, { maxBatchSize: 4, maxWaitMs: 20, queueCapacity: 16 });
    const prompts = [
      ...Array.from({ length: 10 }, (_, i) => `e0: cat ${i}`),
      ...Array.from({ length: 3 }, (_, i) => `e1: dog ${i}`),
      'e2: a lone fish',
    ];
    // interleave the experts so arrival order is mixed
    const order = prompts.map((p, i) => ({ p, k: (i * 7) % prompts.length })).sort((a, b) => a.k - b.k).map((x) => x.p);
    const results = await Promise.all(order.map((p, i) => b.submit(req(p, i))));

    expect(engine.routeCalls).toEqual([order]);
    for (const c of engine.generateCalls) {
      expect(c.requests.every((r) => fakeRoute(r.prompt, 3) === c.expertId)).toBe(true);
      expect(c.requests.length).toBeLessThanOrEqual(4);
    }
    const sizes = sizesByExpert(engine);
    expect(sizes[0]!.sort()).toEqual([2, 4, 4]);
    expect(sizes[1]).toEqual([3]);
    expect(sizes[2]).toEqual([1]);
    expect(engine.maxConcurrentCalls).toBe(1);
    results.forEach((r, i) => {
      expect(r.expertId).toBe(fakeRoute(order[i]!, 3));
      expect(r.routed).toBe(true);
      expect(r.macs).toBe(engine.info.experts[r.expertId]!.macs);
      expect(Buffer.from(r.image.png).equals(Buffer.from(fakeImage(r.expertId, req(order[i]!, i))))).toBe(true);
    });
    // each request is in exactly one batch, and a batch's reported size is its generate call's size
    expect(engine.generateCalls.reduce((a, c) => a + c.requests.length, 0)).toBe(prompts.length);
    expect(results.filter((r) => r.expertId === 1).every((r) => r.batchSize === 3)).toBe(true);
    expect(b.queueState()).toEqual({ routing: 0, experts: new Map([[0, 0], [1, 0], [2, 0]]), inFlight: 0 });
  });

  it('runs a partial batch only after maxWaitMs, and requests arriving within the wait join it', async () => {
    const engine = new FakeEngine({ experts: 2 });
    const b = new ExpertBatcher(engine, { maxBatchSize: 8, maxWaitMs: 150, queueCapacity: 16 });
    const t0 = performance.now();
    const first = b.submit(req('e0: first'));
    await new Promise((r) => setTimeout(r, 25));
    const later = [b.submit(req('e0: second')), b.submit(req('e0: third'))];
    const results = await Promise.all([first, ...later]);
    expect(engine.generateCalls).toHaveLength(1);
    expect(engine.generateCalls[0]!.requests.map((r) => r.prompt)).toEqual(['e0: first', 'e0: second', 'e0: third']);
    // started when the oldest request had waited maxWaitMs (2 ms timer slack), not before
    expect(engine.generateCalls[0]!.startMs - t0).toBeGreaterThanOrEqual(148);
    expect(results[0]!.queueMs).toBeGreaterThanOrEqual(148);
    expect(results[1]!.queueMs).toBeLessThan(results[0]!.queueMs);
  });

  it('runs a full batch at once without waiting', async () => {
    const engine = new FakeEngine({ experts: 2 });
    const b = new ExpertBatcher(engine, { maxBatchSize: 4, maxWaitMs: 60_000, queueCapacity: 16 });
    const t0 = performance.now();
    const results = await Promise.all([0, 1, 2, 3].map((i) => b.submit(req(`e1: p${i}`, i))));
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(results.map((r) => r.batchSize)).toEqual([4, 4, 4, 4]);
    expect(sizesByExpert(engine)).toEqual({ 1: [4] });
  });

  it("passes each request's own seed through; an image does not depend on what else is in its batch", async () => {
    const engine = new FakeEngine({ experts: 3 });
    const b = new ExpertBatcher(engine, { maxBatchSize: 8, maxWaitMs: 5, queueCapacity: 16 });
    const target = req('a red square', 12345);
    const alone = await b.submit(target, { expert: 1 });
    const mixed = await Promise.all([
      b.submit(req('a blue circle', 7), { expert: 1 }),
      b.submit(target, { expert: 1 }),
      b.submit(req('a red square', 999), { expert: 1 }),
    ]);
    expect(alone.batchSize).toBe(1);
    expect(mixed[1]!.batchSize).toBe(3);
    expect(Buffer.from(mixed[1]!.image.png).equals(Buffer.from(alone.image.png))).toBe(true);
    expect(Buffer.from(mixed[2]!.image.png).equals(Buffer.from(alone.image.png))).toBe(false); // the seed matters
    expect(engine.generateCalls[1]!.requests.map((r) => r.seed)).toEqual([7, 12345, 999]);
    expect(mixed.every((r) => !r.routed && r.expertId === 1)).toBe(true);
    expect(engine.routeCalls).toEqual([]); // forced requests are not routed
  });

  it('rejects with E_QUEUE_FULL when the routing queue or an expert queue is at capacity', async () => {
    const engine = new FakeEngine({ experts: 2 });
    const b = new ExpertBatcher(engine, { maxBatchSize: 8, maxWaitMs: 60_000, queueCapacity: 2 });
    const forced = [b.submit(req('x', 1), { expert: 0 }), b.submit(req('x', 2), { expert: 0 })];
    const e = await rejection(b.submit(req('x', 3), { expert: 0 }));
    expect(e.code).toBe(BATCHER_ERROR.queueFull);
    expect(e.message).toMatch(/^expert 0 queue: queue full/);
    // the routing queue holds capacity × #experts = 4: four accepted in one tick, the fifth is refused at once
    const routed = ['e1: a', 'e1: b', 'e1: c', 'e1: d'].map((p) => b.submit(req(p)));
    const e5 = await rejection(b.submit(req('e1: e')));
    expect(e5.message).toBe('routing queue: queue full, retry later: expected at most 4 waiting');
    // once routed, expert 1 takes two; the two routed there after it is full are refused
    const late = await Promise.all(routed.slice(2).map(rejection));
    expect(late.map((x) => x.message)).toEqual(['expert 1 queue: queue full, retry later: expected at most 2 waiting', 'expert 1 queue: queue full, retry later: expected at most 2 waiting']);
    expect(b.queueState().experts.get(1)).toBe(2);
    await b.drain();
    expect((await Promise.all([...forced, ...routed.slice(0, 2)])).map((r) => r.batchSize)).toEqual([2, 2, 2, 2]);
  });

  it('a request that times out before it starts leaves its queue and is never generated', async () => {
    const engine = new FakeEngine({ experts: 2 });
    const b = new ExpertBatcher(engine, { maxBatchSize: 8, maxWaitMs: 60_000, queueCapacity: 4 });
    const t0 = performance.now();
    const e = await rejection(b.submit(req('e0: slow'), { timeoutMs: 30 }));
    expect(e.code).toBe(BATCHER_ERROR.timeout);
    expect(e.message).toMatch(/timed out after 30 ms waiting in the queue/);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(28);
    expect(b.queueState().experts.get(0)).toBe(0);
    await b.drain();
    expect(engine.generateCalls).toHaveLength(0);
  });

  it('a request that times out while generating is rejected at its deadline; its batch still finishes', async () => {
    const engine = new FakeEngine({ experts: 1, generateDelayMs: 400 });
    const b = new ExpertBatcher(engine, { maxBatchSize: 2, maxWaitMs: 0, queueCapacity: 4 });
    const t0 = performance.now();
    const [late, ok] = [b.submit(req('a'), { timeoutMs: 40, expert: 0 }), b.submit(req('b'), { expert: 0 })];
    const e = await rejection(late);
    expect(performance.now() - t0).toBeLessThan(380);
    expect(e.message).toMatch(/while generating/);
    expect((await ok).batchSize).toBe(2);
  });

  it('an aborted signal cancels a queued request and removes it', async () => {
    const engine = new FakeEngine({ experts: 1 });
    const b = new ExpertBatcher(engine, { maxBatchSize: 8, maxWaitMs: 60_000, queueCapacity: 4 });
    const ac = new AbortController();
    const p = b.submit(req('a'), { expert: 0, signal: ac.signal });
    const keep = b.submit(req('b'), { expert: 0 });
    expect(b.queueState().experts.get(0)).toBe(2);
    ac.abort();
    expect((await rejection(p)).code).toBe(BATCHER_ERROR.cancelled);
    expect(b.queueState().experts.get(0)).toBe(1);
    await b.drain();
    expect(engine.generateCalls.map((c) => c.requests.map((r) => r.prompt))).toEqual([['b']]);
    await keep;
  });

  it('a steady stream of arrivals does not starve generation behind routing', async () => {
    const engine = new FakeEngine({ experts: 1, routeDelayMs: 10 });
    const b = new ExpertBatcher(engine, { maxBatchSize: 2, maxWaitMs: 0, queueCapacity: 100 });
    const ps: Promise<BatchResult>[] = [];
    for (let i = 0; i < 40; i++) {
      ps.push(b.submit(req(`p${i}`)));
      await new Promise((r) => setTimeout(r, 3)); // always something new to route when a route call returns
    }
    const lastSubmitMs = performance.now();
    await Promise.all(ps);
    expect(engine.routeCalls.length).toBeGreaterThan(2);
    expect(engine.generateCalls[0]!.startMs).toBeLessThan(lastSubmitMs);
  });

  it('drain runs queued partial batches at once, settles every request, then refuses new ones', async () => {
    const engine = new FakeEngine({ experts: 2, generateDelayMs: 5 });
    const b = new ExpertBatcher(engine, { maxBatchSize: 2, maxWaitMs: 60_000, queueCapacity: 8 });
    const settled: BatchResult[] = [];
    const ps = ['e0: a', 'e0: b', 'e0: c', 'e1: d', 'e1: e'].map((p) => b.submit(req(p)).then((r) => void settled.push(r)));
    await waitFor(() => b.queueState().routing === 0 && engine.routeCalls.length === 1);
    await new Promise((r) => setTimeout(r, 10));
    expect(engine.generateCalls.length).toBe(2); // the two full batches ran; e0: c waits for company
    const t0 = performance.now();
    await b.drain();
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(settled).toHaveLength(5);
    expect(sizesByExpert(engine)).toEqual({ 0: [2, 1], 1: [2] });
    expect((await rejection(b.submit(req('late')))).code).toBe(BATCHER_ERROR.shuttingDown);
    await Promise.all(ps);
  });

  it('an engine failure rejects every request of that batch with E_ENGINE and spares other experts', async () => {
    const engine = new FakeEngine({ experts: 2, failExpert: 1 });
    const b = new ExpertBatcher(engine, { maxBatchSize: 4, maxWaitMs: 5, queueCapacity: 8 });
    const bad = [b.submit(req('e1: x')), b.submit(req('e1: y'))];
    const good = b.submit(req('e0: z'));
    for (const p of bad) {
      const e = await rejection(p);
      expect(e.code).toBe(BATCHER_ERROR.engine);
      expect(e.message).toBe('generate (expert 1, batch of 2) failed: expert 1 is broken');
    }
    expect((await good).expertId).toBe(0);
  });

  it('checks what the engine returns: route ids must be known, one image per request', async () => {
    class BadRoutes extends FakeEngine {
      override route(prompts: readonly string[]): Promise<number[]> {
        return Promise.resolve(prompts.map(() => 9));
      }
    }
    class ShortBatch extends FakeEngine {
      override async generate(expertId: number, requests: readonly import('./engine').ImageRequest[]) {
        return (await super.generate(expertId, requests)).slice(1);
      }
    }
    const b1 = new ExpertBatcher(new BadRoutes({ experts: 2 }), { maxBatchSize: 4, maxWaitMs: 0, queueCapacity: 8 });
    expect((await rejection(b1.submit(req('p')))).message).toMatch(/route failed: route returned an unknown expert id: expected \[0,1\], found 9/);
    const b2 = new ExpertBatcher(new ShortBatch({ experts: 2 }), { maxBatchSize: 4, maxWaitMs: 0, queueCapacity: 8 });
    expect((await rejection(b2.submit(req('p'), { expert: 0 }))).message).toMatch(/wrong number of images: expected 1, found 0/);
    expect((await rejection(b2.submit(req('p'), { expert: 5 }))).field).toBe('expert');
    expect(() => new ExpertBatcher(new FakeEngine({ experts: 0 }), {})).toThrow(/no experts/);
    expect(() => new ExpertBatcher(new FakeEngine(), { maxBatchSize: 0 })).toThrow(/^maxBatchSize: /);
  });
});
