import * as fs from 'node:fs';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import sharp from 'sharp';
import { parseCommandArgs, runProgram } from '@aptp/core';
import { useBackend } from '@aptp/core/testing';
import { FULL, loadAptpModel } from '../generate';
import { samplerProgram } from '../program';
import { tempDir, writeTinyAptpModel } from '../testModel';
import { readPromptsFile, sampleCommand } from './sample';

function sink(): { stream: Writable; text: () => string } {
  let buf = '';
  return { stream: new Writable({ write(c, _e, cb) { buf += c.toString(); cb(); } }), text: () => buf };
}

async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const o = sink();
  const e = sink();
  const code = await runProgram(samplerProgram, ['sample', '--backend', 'wasm', ...args], { out: o.stream, err: e.stream });
  return { code, out: o.text(), err: e.text() };
}

interface ManifestRow {
  index: number;
  file: string;
  prompt: string;
  seed: number;
  expert: number | 'full';
  routed: boolean;
  macs: number;
  macsRatio: number;
  latencyMs: number;
  batchSize: number;
  steps: number;
  guidance: number;
  width: number;
  height: number;
  unetCalls: number;
}

const manifest = (dir: string): ManifestRow[] => fs.readFileSync(path.join(dir, 'manifest.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as ManifestRow);

const PROMPTS = ['a red circle left of a blue square', 'the letter A', 'three green triangles', 'a yellow star on stripes', 'two small circles'];

beforeAll(() => useBackend('wasm'));

describe('sample', () => {
  const fx = writeTinyAptpModel();

  it('routes, groups by expert, writes PNGs and a manifest; an image does not depend on its batch', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'prompts.jsonl');
    const rows = [
      { prompt: PROMPTS[0], seed: 11 },
      { prompt: PROMPTS[1] },
      { prompt: PROMPTS[2], steps: 3, guidance: 2 },
      { prompt: PROMPTS[3], width: 4, height: 4 },
      { prompt: PROMPTS[4], guidance: 1 },
    ];
    fs.writeFileSync(file, rows.map((r) => JSON.stringify(r)).join('\n') + '\n\n');
    const out = path.join(dir, 'run');
    const r = await run(['--model-dir', fx.dir, '--prompts-file', file, '--out', out, '--steps', '2', '--seed', '100', '--batch-size', '2']);
    expect(r.err).not.toMatch(/Error/);
    expect(r.code).toBe(0);
    expect(r.out).toContain(out);
    const m = manifest(out).sort((a, b) => a.index - b.index);
    expect(m.map((x) => x.prompt)).toEqual(PROMPTS);
    expect(m.map((x) => x.seed)).toEqual([11, 101, 102, 103, 104]);
    expect(m.map((x) => [x.steps, x.guidance, x.width])).toEqual([[2, 7.5, 8], [2, 7.5, 8], [3, 2, 8], [2, 7.5, 4], [2, 1, 8]]);
    // routing: as the model routes them; MACs of the routed expert
    const model = await loadAptpModel(fx.dir);
    try {
      const ids = await model.route(PROMPTS);
      expect(m.map((x) => x.expert)).toEqual(ids);
      m.forEach((x) => {
        expect(x.routed).toBe(true);
        expect(x.macs).toBe(model.macs(x.expert as number, x.width, x.height));
        expect(x.macsRatio).toBeCloseTo(x.macs / model.macs(FULL, x.width, x.height), 12);
        expect(x.latencyMs).toBeGreaterThan(0);
        expect(x.batchSize).toBeLessThanOrEqual(2);
        expect(x.unetCalls).toBe(x.steps + 1); // PNDM (PLMS) repeats its first timestep
      });
      // the prompts reach more than one expert, and every batch (rows sharing a latency) holds one expert
      expect(new Set(ids).size).toBeGreaterThan(1);
      const byBatch = new Map<number, Set<unknown>>();
      m.forEach((x) => byBatch.set(x.latencyMs, (byBatch.get(x.latencyMs) ?? new Set()).add(x.expert)));
      for (const experts of byBatch.values()) expect(experts.size).toBe(1);
      const cfg = JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
      expect(cfg).toMatchObject({ command: 'sample', steps: 2, seed: 100, schedulerClass: 'PNDMScheduler', prompts: 5 });
    } finally {
      await model.dispose();
    }
    for (const x of m) {
      const meta = await sharp(path.join(out, x.file)).metadata();
      expect([meta.format, meta.width, meta.height, meta.channels]).toEqual(['png', x.width, x.height, 3]);
    }
    // the first prompt alone, same seed: the same PNG bytes
    const alone = path.join(dir, 'alone');
    expect((await run(['--model-dir', fx.dir, '--prompt', PROMPTS[0]!, '--seed', '11', '--steps', '2', '--out', alone])).code).toBe(0);
    const a = manifest(alone);
    expect(a).toHaveLength(1);
    expect(a[0]!.batchSize).toBe(1);
    expect(fs.readFileSync(path.join(alone, a[0]!.file)).equals(fs.readFileSync(path.join(out, m[0]!.file)))).toBe(true);
  });

  it('--expert forces one expert and --full uses the unpruned model', async () => {
    const dir = tempDir();
    const forced = path.join(dir, 'forced');
    expect((await run(['--model-dir', fx.dir, '--prompt', PROMPTS[0]!, '--prompt', PROMPTS[1]!, '--expert', '2', '--steps', '1', '--scheduler', 'ddim', '--out', forced])).code).toBe(0);
    const f = manifest(forced);
    expect(f.map((x) => [x.expert, x.routed, x.batchSize, x.unetCalls])).toEqual([[2, false, 2, 1], [2, false, 2, 1]]);
    const full = path.join(dir, 'full');
    expect((await run(['--model-dir', fx.dir, '--prompt', PROMPTS[0]!, '--full', '--steps', '1', '--scheduler', 'ddim', '--out', full])).code).toBe(0);
    const g = manifest(full);
    expect(g[0]).toMatchObject({ expert: 'full', routed: false, macsRatio: 1 });
    // the all-ones expert 0 equals the full model; expert 2 does not
    const e0 = path.join(dir, 'e0');
    expect((await run(['--model-dir', fx.dir, '--prompt', PROMPTS[0]!, '--expert', '0', '--steps', '1', '--scheduler', 'ddim', '--out', e0])).code).toBe(0);
    const png = (d: string) => fs.readFileSync(path.join(d, manifest(d)[0]!.file));
    expect(png(e0).equals(png(full))).toBe(true);
    expect(png(forced).equals(png(full))).toBe(false);
  });

  it('stops at an interrupt, keeping the images and manifest lines of finished batches', async () => {
    const out = path.join(tempDir(), 'interrupted');
    const controller = new AbortController();
    const err = new Writable({
      write(c, _e, cb) {
        if (/batch 2\/3/.test(c.toString())) controller.abort();
        cb();
      },
    });
    const o = sink();
    const args = parseCommandArgs(sampleCommand, ['--model-dir', fx.dir, '--backend', 'wasm', '--prompt', 'a', '--prompt', 'b', '--prompt', 'c', '--expert', '1', '--batch-size', '1', '--steps', '3', '--out', out]);
    await sampleCommand.run(args, { out: o.stream, err, signal: controller.signal });
    expect(o.text()).toMatch(/^1\/3 images \(interrupted\)/);
    const m = manifest(out);
    expect(m.map((x) => x.prompt)).toEqual(['a']);
    expect(fs.existsSync(path.join(out, m[0]!.file))).toBe(true);
  });

  it('reports usage and input errors with their exit codes', async () => {
    const dir = tempDir();
    expect((await run(['--model-dir', fx.dir])).code).toBe(2);
    const noDir = await run(['--prompt', 'a']);
    expect(noDir.code).toBe(2);
    expect(noDir.err).toMatch(/--model-dir/);
    const bad = await run(['--model-dir', path.join(dir, 'missing'), '--prompt', 'a']);
    expect(bad.code).toBe(3);
    expect(bad.err).toMatch(/model folder not found/);
    const size = await run(['--model-dir', fx.dir, '--prompt', 'a', '--width', '7', '--out', path.join(dir, 'x')]);
    expect(size.code).toBe(2);
    expect(size.err).toMatch(/multiple of 2/);
    const expert = await run(['--model-dir', fx.dir, '--prompt', 'a', '--expert', '9', '--out', path.join(dir, 'y')]);
    expect(expert.code).toBe(3);
    expect(expert.err).toMatch(/expert: expected 0 … 2, found 9/);
    const file = path.join(dir, 'p.jsonl');
    fs.writeFileSync(file, '{"prompt": "a"}\n{"prompt": "b", "sed": 3}\n');
    const row = await run(['--model-dir', fx.dir, '--prompts-file', file, '--out', path.join(dir, 'z')]);
    expect(row.code).toBe(3);
    expect(row.err).toMatch(/p\.jsonl: line 2: sed/);
  });
});

describe('sample with a Stable-Diffusion-style folder (CLIP text encoder + VAE decoder in ONNX, released router layout)', () => {
  it('generates 2× upsampled images from 4-channel latents and routes with hypernet/ + quantizer/', async () => {
    const fx = writeTinyAptpModel({ sd: true, router: 'released', experts: 'folders' });
    expect(fs.existsSync(path.join(fx.dir, 'hypernet', 'config.json'))).toBe(true);
    const out = path.join(tempDir(), 'sd');
    const r = await run(['--model-dir', fx.dir, '--prompt', 'a red circle', '--prompt', 'the letter A', '--steps', '2', '--scheduler', 'dpm', '--out', out]);
    expect(r.code).toBe(0);
    const m = manifest(out);
    const model = await loadAptpModel(fx.dir);
    try {
      expect(model.defaultSize).toEqual([16, 16]);
      expect(model.sizeMultiple).toBe(4);
      expect(m.map((x) => x.expert).sort()).toEqual((await model.route(['a red circle', 'the letter A'])).sort());
    } finally {
      await model.dispose();
    }
    for (const x of m) {
      const meta = await sharp(path.join(out, x.file)).metadata();
      expect([meta.width, meta.height, x.unetCalls]).toEqual([16, 16, 2]);
    }
  });
});

describe('readPromptsFile', () => {
  it('reads one prompt per line from text, skipping blank lines, and JSONL rows with options', () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'p.txt'), 'a red circle\n\n  the letter A  \r\n');
    expect(readPromptsFile(path.join(dir, 'p.txt'))).toEqual([{ prompt: 'a red circle' }, { prompt: 'the letter A' }]);
    fs.writeFileSync(path.join(dir, 'p.jsonl'), '{"prompt": "x", "seed": 3, "steps": 4, "guidance": 2.5}\n');
    expect(readPromptsFile(path.join(dir, 'p.jsonl'))).toEqual([{ prompt: 'x', seed: 3, steps: 4, guidance: 2.5 }]);
    fs.writeFileSync(path.join(dir, 'q.jsonl'), '{"prompt": 3}\n');
    expect(() => readPromptsFile(path.join(dir, 'q.jsonl'))).toThrow(/line 1: prompt/);
    fs.writeFileSync(path.join(dir, 'r.jsonl'), 'nope\n');
    expect(() => readPromptsFile(path.join(dir, 'r.jsonl'))).toThrow(/line 1: .*not valid JSON/);
  });
});
