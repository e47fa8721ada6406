import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { parseCommandArgs, runProgram } from '@aptp/core';
import { samplerProgram } from '../program';
import { FakeEngine, fakeImage } from '../server/fakeEngine';
import { httpRequest, waitFor } from '../server/testClient';
import { makeServeCommand } from './serve';

function sink(): { stream: Writable; text: () => string } {
  let buf = '';
  return { stream: new Writable({ write(c, _e, cb) { buf += c.toString(); cb(); } }), text: () => buf };
}

describe('aptp-sampler serve', () => {
  let dir = '';
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'aptp-serve-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('fails with a usage error naming --model-dir when no model folder is given', async () => {
    const err = sink();
    expect(await runProgram(samplerProgram, ['serve', '--port', '0'], { out: sink().stream, err: err.stream })).toBe(2);
    expect(err.text()).toMatch(/^aptp-sampler serve: --model-dir: a model folder is required/);
  });

  it('fails with an input error when the model folder does not exist', async () => {
    const err = sink();
    const missing = path.join(dir, 'nope');
    expect(await runProgram(samplerProgram, ['serve', '--model-dir', missing, '--port', '0'], { out: sink().stream, err: err.stream })).toBe(3);
    expect(err.text()).toContain(`${missing}: model folder not found`);
  });

  it('rejects bad flag values before loading anything', async () => {
    const err = sink();
    expect(await runProgram(samplerProgram, ['serve', '--model-dir', dir, '--max-batch-size', '0'], { out: sink().stream, err: err.stream })).toBe(2);
    expect(err.text()).toMatch(/--max-batch-size/);
  });

  it('serves the engine from the factory until the signal, drains, then disposes the engine', async () => {
    const engine = new FakeEngine({ experts: 2 });
    const seen: string[] = [];
    const command = makeServeCommand(async ({ modelDir }) => {
      seen.push(modelDir);
      return engine;
    });
    const args = parseCommandArgs(command, ['--model-dir', dir, '--host', '127.0.0.1', '--port', '0', '--max-wait-ms', '60000', '--max-batch-size', '4']);
    expect(args).toMatchObject({ port: 0, maxWaitMs: 60000, maxBatchSize: 4, queueCapacity: 64, timeoutMs: 300000 });
    const out = sink();
    const err = sink();
    const controller = new AbortController();
    const running = command.run(args, { out: out.stream, err: err.stream, signal: controller.signal });
    await waitFor(() => /listening on http:\/\/127\.0\.0\.1:\d+/.test(out.text()));
    const url = /listening on (http:\/\/\S+)/.exec(out.text())![1]!;
    expect(out.text()).toMatch(/\(2 experts, max batch 4, max wait 60000 ms, queue 64 per expert, timeout 300000 ms\)/);
    expect(seen).toEqual([dir]);

    // a request waits for company (max wait is a minute); the signal drains it instead of dropping it
    const queued = httpRequest(url, 'POST', '/v1/images', { prompt: 'e1: a boat', seed: 3 });
    await waitFor(() => engine.routeCalls.length === 1);
    controller.abort();
    const r = await queued;
    expect(r.status).toBe(200);
    expect(r.body.equals(Buffer.from(fakeImage(1, { prompt: 'e1: a boat', seed: 3, steps: 4, guidance: 7.5, width: 8, height: 8 })))).toBe(true);
    expect(await running).toBeUndefined();
    expect(engine.disposed).toBe(true);
    expect(err.text()).toMatch(/draining/);
    expect(out.text()).toMatch(/stopped\n$/);
    await expect(httpRequest(url, 'GET', '/healthz')).rejects.toThrow(/ECONNREFUSED/);
  });
});
