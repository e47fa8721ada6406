import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import sharp from 'sharp';
import { InputError, ShapeError } from '@aptp/core';
import { expectNoTensorLeak, useBackend } from '@aptp/core/testing';
import { currentMacsOf, macsModel } from '@aptp/unet-gating';
import { SyntheticPromptEncoder, loadAptpRouter } from '@aptp/router';
import { AptpImageEngine, FULL, encodePng, loadAptpModel, planBatches, type SampleItem } from './generate';
import { Writable } from 'node:stream';
import { parseCommandArgs } from '@aptp/core';
import { serveCommand } from './commands/serve';
import { httpRequest, waitFor } from './server/testClient';
import { PROMPT_DIM, ROUTING_KEYWORDS, writeTinyAptpModel } from './testModel';

const PROMPTS = ['a red circle left of a blue square', 'the letter A', 'three green triangles', 'a yellow star on stripes', 'two small circles', 'the word HI'];

const req = (prompt: string, seed: number, extra: Partial<SampleItem> = {}) => ({ prompt, seed, steps: 2, guidance: 4, width: 8, height: 8, ...extra });

beforeAll(() => useBackend('wasm'));

describe('planBatches', () => {
  it('one expert per batch (ascending, full last), compatible settings, at most batchSize, input order inside', () => {
    const it = (index: number, expert: SampleItem['expert'], extra: Partial<SampleItem> = {}): SampleItem => ({ index, expert, routed: true, ...req(`p${index}`, index), ...extra });
    const items = [it(0, 2), it(1, 0), it(2, 2), it(3, FULL), it(4, 0, { steps: 5 }), it(5, 2), it(6, 0), it(7, 2, { guidance: 1 }), it(8, 0)];
    const batches = planBatches(items, 2).map((b) => b.map((x) => x.index));
    expect(batches).toEqual([[1, 6], [8], [4], [0, 2], [5], [7], [3]]);
    expect(() => planBatches(items, 0)).toThrow(/batch size/);
  });
});

describe('loadAptpModel (tiny pixel-space APTP folder)', () => {
  it('takes the experts from the router codes, from arch_vectors.safetensors or from expert folders', async () => {
    for (const experts of ['codes', 'vectors', 'folders'] as const) {
      const fx = writeTinyAptpModel({ experts });
      const m = await loadAptpModel(fx.dir);
      try {
        expect(m.experts.map((e) => e.source)).toEqual(experts === 'folders' ? ['pruned', 'pruned', 'pruned'] : ['shared', 'shared', 'shared']);
        const expected = experts === 'vectors' ? [...fx.codes].reverse() : fx.codes;
        m.experts.forEach((e, k) => expect(Array.from(e.archVector)).toEqual(Array.from(expected[k]!)));
        expect(m.defaultSize).toEqual([8, 8]);
        expect(m.sizeMultiple).toBe(2);
        // MACs (APTP.md §4): the reference counter at this size with the conditioner's 6 tokens
        const ref = macsModel(fx.config, { latentHeight: 8, latentWidth: 8, textTokens: 6 });
        expect(m.macs(FULL)).toBe(ref.totalMacs);
        m.experts.forEach((e) => expect(m.macs(e.id)).toBe(currentMacsOf(ref, e.archVector).totalMacs));
        const all = m.experts.find((e) => e.archVector.every((v) => v === 1))!;
        expect(m.macs(all.id)).toBe(m.macs(FULL));
        expect(Math.min(...m.experts.map((e) => m.macs(e.id)))).toBeLessThan(0.6 * m.macs(FULL));
        expect(m.macs(FULL, 16, 16)).toBe(macsModel(fx.config, { latentHeight: 16, latentWidth: 16, textTokens: 6 }).totalMacs);
      } finally {
        await m.dispose();
        await m.dispose();
      }
    }
  });

  it('routes every prompt as the reference routes a prompt alone (cosine argmax, eval noise of row 0)', async () => {
    const fx = writeTinyAptpModel();
    const m = await loadAptpModel(fx.dir);
    const router = loadAptpRouter(fx.dir);
    const enc = new SyntheticPromptEncoder({ dim: PROMPT_DIM, seed: 0 });
    try {
      const ids = await m.route(PROMPTS);
      const expected: number[] = [];
      for (const p of PROMPTS) {
        const x = await enc.encode([p]);
        expected.push((await router.route(x, { noise: 'reference' })).expert[0]!);
        x.dispose();
      }
      expect(ids).toEqual(expected);
      expect(new Set(ids).size).toBeGreaterThan(1);
      expect(await m.route(ROUTING_KEYWORDS)).toEqual([0, 1, 2]);
      expect(await m.route([PROMPTS[3]!])).toEqual([ids[3]]);
      const none = await loadAptpModel(fx.dir, { routeNoise: 'none' });
      const xs = await enc.encode(PROMPTS);
      expect(await none.route(PROMPTS)).toEqual(Array.from((await router.route(xs, { noise: 'none' })).expert));
      xs.dispose();
      await none.dispose();
      await expectNoTensorLeak(() => m.route(PROMPTS).then(() => undefined), { name: 'route' });
    } finally {
      await m.dispose();
      router.dispose();
    }
  });

  it('a shared-weight expert and its expert folder make the same image; the all-ones expert equals the full model', async () => {
    const shared = await loadAptpModel(writeTinyAptpModel({ experts: 'codes' }).dir);
    const folders = await loadAptpModel(writeTinyAptpModel({ experts: 'folders' }).dir);
    try {
      const rs = [req('a red circle', 3), req('the letter A', 4, { guidance: 1 })];
      for (const k of [1, 2]) {
        const a = await shared.generate(k, rs, { scheduler: 'DDIMScheduler' });
        const b = await folders.generate(k, rs, { scheduler: 'DDIMScheduler' });
        rs.forEach((_, i) => expect(Buffer.from(a[i]!.rgb).equals(Buffer.from(b[i]!.rgb))).toBe(true));
      }
      const e0 = await shared.generate(0, rs, { scheduler: 'DDIMScheduler' });
      const full = await shared.generate(FULL, rs, { scheduler: 'DDIMScheduler' });
      const e2 = await shared.generate(2, rs, { scheduler: 'DDIMScheduler' });
      rs.forEach((_, i) => {
        expect(Buffer.from(e0[i]!.rgb).equals(Buffer.from(full[i]!.rgb))).toBe(true);
        expect(Buffer.from(e2[i]!.rgb).equals(Buffer.from(full[i]!.rgb))).toBe(false);
      });
    } finally {
      await shared.dispose();
      await folders.dispose();
    }
  });

  it('keeps the tensor count flat across steps and experts (one expert loaded at a time)', async () => {
    const m = await loadAptpModel(writeTinyAptpModel().dir);
    try {
      for (const k of [0, 1, 2]) await m.generate(k, [req('x', 1)]);
      const counts: number[] = [];
      await m.generate(2, [req('x', 1, { steps: 6 }), req('y', 2, { steps: 6 })], { scheduler: 'DDIMScheduler', onProgress: () => counts.push(tf.memory().numTensors) });
      expect(new Set(counts).size).toBe(1);
      await expectNoTensorLeak(async () => {
        for (const k of [0, 1, 2]) await m.generate(k, [req('x', 1)]);
      }, { name: 'expert switching', steps: 2 });
    } finally {
      await m.dispose();
    }
  });

  it('lists the expected files of a missing part', async () => {
    const fx = writeTinyAptpModel({ experts: 'folders' });
    fs.rmSync(path.join(fx.dir, 'experts', 'expert-1'), { recursive: true });
    await expect(loadAptpModel(fx.dir)).rejects.toThrow(/missing experts\/1/);
    const fx2 = writeTinyAptpModel();
    fs.rmSync(path.join(fx2.dir, 'prompt_encoder'), { recursive: true });
    await expect(loadAptpModel(fx2.dir)).rejects.toThrow(/prompt_encoder\/\{tokenizer\.json, config\.json, onnx\/model\.onnx\}/);
    fs.rmSync(path.join(fx2.dir, 'router'), { recursive: true });
    const noRouter = await loadAptpModel(fx2.dir);
    expect(noRouter.experts).toEqual([]);
    await expect(noRouter.route(['a'])).rejects.toThrow(/router\/config\.json.*hypernet\/config\.json/);
    expect(() => noRouter.expert(0)).toThrow(InputError);
    await noRouter.dispose();
    const fx3 = writeTinyAptpModel({ experts: 'vectors' });
    fs.writeFileSync(path.join(fx3.dir, 'prompt_encoder', 'config.json'), JSON.stringify({ _class_name: 'SyntheticPromptEncoder', dim: 5 }));
    await expect(loadAptpModel(fx3.dir)).rejects.toThrow(ShapeError);
    fs.rmSync(path.join(fx3.dir, 'scheduler'), { recursive: true });
    await expect(loadAptpModel(fx3.dir)).rejects.toThrow(/scheduler_config\.json/);
    await expect(loadAptpModel(path.join(fx3.dir, 'nope'))).rejects.toThrow(/model folder not found/);
  });
});

describe('AptpImageEngine (the server engine over a model folder)', () => {
  it('reports experts with MACs, routes, and returns PNGs that do not depend on the batch', async () => {
    const fx = writeTinyAptpModel();
    const engine = new AptpImageEngine(await loadAptpModel(fx.dir), { steps: 2 });
    try {
      expect(engine.info.experts.map((e) => e.id)).toEqual([0, 1, 2]);
      expect(engine.info.defaults).toEqual({ steps: 2, guidance: 7.5, width: 8, height: 8 });
      expect(engine.info.limits.sizeMultiple).toBe(2);
      expect(engine.info.experts[0]!.macs).toBe(engine.model.macs(FULL));
      const ids = await engine.route(PROMPTS);
      expect(ids).toEqual(await engine.model.route(PROMPTS));
      const r = { prompt: 'a red circle', seed: 5, steps: 2, guidance: 7.5, width: 8, height: 8 };
      const [alone] = await engine.generate(1, [r]);
      const mixed = await engine.generate(1, [{ ...r, prompt: 'blue', seed: 9 }, { ...r, steps: 3 }, r, { ...r, width: 4, height: 4 }]);
      expect(Buffer.from(mixed[2]!.png).equals(Buffer.from(alone!.png))).toBe(true);
      const meta = await sharp(Buffer.from(alone!.png)).metadata();
      expect([meta.format, meta.width, meta.height, meta.channels]).toEqual(['png', 8, 8, 3]);
      expect((await sharp(Buffer.from(mixed[3]!.png)).metadata()).width).toBe(4);
      expect(alone!.info).toMatchObject({ scheduler: 'PNDMScheduler', unetCalls: 3 });
    } finally {
      await engine.dispose();
    }
  });

  it('serve runs the real engine: concurrent requests batch per expert, same PNG as a direct generate', async () => {
    const fx = writeTinyAptpModel();
    const args = parseCommandArgs(serveCommand, ['--model-dir', fx.dir, '--backend', 'wasm', '--host', '127.0.0.1', '--port', '0', '--max-wait-ms', '2000', '--max-batch-size', '4']);
    let out = '';
    const controller = new AbortController();
    const stream = (f: (s: string) => void) => new Writable({ write(c, _e, cb) { f(c.toString()); cb(); } });
    const running = serveCommand.run(args, { out: stream((t) => (out += t)), err: stream(() => undefined), signal: controller.signal });
    await waitFor(() => /listening on/.test(out), 60_000);
    const url = /listening on (http:\/\/\S+)/.exec(out)![1]!;
    // "circle" → expert 0 and "letter" → expert 1 (the fixture's predictor)
    const body = (prompt: string, seed: number) => ({ prompt, seed, steps: 2, guidance: 3 });
    const rs = await Promise.all([httpRequest(url, 'POST', '/v1/images', body('circle', 1)), httpRequest(url, 'POST', '/v1/images', body('letter', 2)), httpRequest(url, 'POST', '/v1/images', body('circle', 3))]);
    expect(rs.map((r) => r.status)).toEqual([200, 200, 200]);
    expect(rs.map((r) => r.headers['content-type'])).toEqual(['image/png', 'image/png', 'image/png']);
    const metrics = (await httpRequest(url, 'GET', '/metrics')).body.toString();
    controller.abort();
    await running;
    const engine = new AptpImageEngine(await loadAptpModel(fx.dir));
    try {
      const [direct] = await engine.generate(0, [{ ...body('circle', 3), width: 8, height: 8 }]);
      expect(rs[2]!.body.equals(Buffer.from(direct!.png))).toBe(true);
    } finally {
      await engine.dispose();
    }
    // expert 0 ran its two requests as one batch of 2, expert 1 one batch of 1
    expect(metrics).toMatch(/aptp_batch_size_sum\{expert="0"\} 2\b/);
    expect(metrics).toMatch(/aptp_batch_size_count\{expert="0"\} 1\b/);
    expect(metrics).toMatch(/aptp_batch_size_count\{expert="1"\} 1\b/);
  });

  it('encodePng round-trips the pixels', async () => {
    const rgb = Uint8Array.from({ length: 4 * 3 * 3 }, (_, i) => (i * 37) % 256);
    const png = await encodePng(rgb, 4, 3);
    const { data, info } = await sharp(Buffer.from(png)).raw().toBuffer({ resolveWithObject: true });
    expect([info.width, info.height, info.channels]).toEqual([4, 3, 3]);
    expect(Array.from(data)).toEqual(Array.from(rgb));
  });
});
