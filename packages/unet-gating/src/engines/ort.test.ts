import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { Rng, writeSafetensors } from '@aptp/core';
import { describeBackends, expectClose, expectNoTensorLeak } from '@aptp/core/testing';
import { parseUNetConfig } from '../config';
import { createEagerUNet, type UNet2DConditionModel } from '../unet';
import { hostSource, randomUNetWeights } from '../weights';
import { exportUNetFolder, exportUNetToOnnx, readOnnxUNetInfo, ONNX_FILES } from '../export/onnx';
import { OrtUNetEngine } from './ort';
import { TfjsUNetEngine } from './tfjs';
import { combineGuidance, type HostArray } from './engine';

/**
 * The sampler engines: ORT (exported model) and tfjs (eager model) agree; classifier-free guidance in one batched
 * call equals ε_u + w·(ε_c − ε_u) from two separate calls; fixed-size exports reject other sizes by name; the input
 * buffers are reused across steps; dispose is idempotent; the tfjs engine does not leak tensors.
 */
const TINY = {
  block_out_channels: [8, 16],
  down_block_types: ['CrossAttnDownBlock2D', 'DownBlock2D'],
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D'],
  attention_head_dim: 2,
  cross_attention_dim: 6,
  layers_per_block: 1,
  norm_num_groups: 4,
  in_channels: 3,
  out_channels: 3,
  use_linear_projection: true,
};
const cfg = parseUNetConfig(TINY, 'tiny/config.json');
const weights = randomUNetWeights(cfg, 5);

const host = (key: string, dims: number[]): HostArray => ({ data: Rng.forKey(9, key).normal(dims.reduce((a, b) => a * b, 1)), dims });

/** Uncond rows then cond rows. */
function cfgContext(b: number, s: number): HostArray {
  const u = host('uncond', [b, s, 6]);
  const c = host('cond', [b, s, 6]);
  const data = new Float32Array(2 * u.data.length);
  data.set(u.data, 0);
  data.set(c.data, u.data.length);
  return { data, dims: [2 * b, s, 6] };
}

const half = (x: HostArray, k: 0 | 1): HostArray => {
  const n = x.data.length / 2;
  return { data: x.data.slice(k * n, (k + 1) * n), dims: [x.dims[0]! / 2, ...x.dims.slice(1)] };
};

describe('OrtUNetEngine', () => {
  let ort: OrtUNetEngine;
  beforeAll(async () => {
    ort = await OrtUNetEngine.fromExport(exportUNetToOnnx(cfg, hostSource(weights)));
  });
  afterAll(async () => {
    await ort.dispose();
    await ort.dispose(); // idempotent
  });

  it('guided step = one batched call combined as ε_u + w·(ε_c − ε_u), equal to two separate calls', async () => {
    const sample = host('latents', [2, 3, 8, 4]);
    const ehs = cfgContext(2, 5);
    const guided = await ort.predictGuided({ sample, timestep: 421, encoderHiddenStates: ehs, guidanceScale: 7.5 });
    expect(guided.dims).toEqual([2, 3, 8, 4]);
    const u = await ort.predict({ sample, timestep: 421, encoderHiddenStates: half(ehs, 0) });
    const c = await ort.predict({ sample, timestep: 421, encoderHiddenStates: half(ehs, 1) });
    const both = new Float32Array(2 * u.data.length);
    both.set(u.data, 0);
    both.set(c.data, u.data.length);
    expectClose(guided.data, combineGuidance(both, 7.5), { name: 'guided vs two calls', rtol: 1e-5 });
    // guidance actually mixes: w = 1 gives the conditional prediction, w = 0 the unconditional one
    const g1 = await ort.predictGuided({ sample, timestep: 421, encoderHiddenStates: ehs, guidanceScale: 1 });
    expectClose(g1.data, c.data, { name: 'w=1 → cond', rtol: 1e-5 });
    const g0 = await ort.predictGuided({ sample, timestep: 421, encoderHiddenStates: ehs, guidanceScale: 0 });
    expectClose(g0.data, u.data, { name: 'w=0 → uncond', rtol: 1e-5 });
    expect(Math.max(...c.data.map((v, i) => Math.abs(v - u.data[i]!)))).toBeGreaterThan(1e-3);
  });

  it('reuses its 2B input buffers across steps and returns caller-owned outputs', async () => {
    const ehs = cfgContext(1, 3);
    const a = await ort.predictGuided({ sample: host('s1', [1, 3, 4, 4]), timestep: 10, encoderHiddenStates: ehs, guidanceScale: 5 });
    const buf = (ort as unknown as { guidedSample: Float32Array }).guidedSample;
    const b = await ort.predictGuided({ sample: host('s2', [1, 3, 4, 4]), timestep: 900, encoderHiddenStates: ehs, guidanceScale: 5 });
    expect((ort as unknown as { guidedSample: Float32Array }).guidedSample).toBe(buf);
    expect(a.data).not.toBe(b.data);
    expect(Math.max(...a.data.map((v, i) => Math.abs(v - b.data[i]!)))).toBeGreaterThan(1e-3);
  });

  it('rejects malformed steps with errors naming the input', async () => {
    const ehs = cfgContext(1, 3);
    await expect(ort.predictGuided({ sample: host('s', [2, 3, 4, 4]), timestep: 1, encoderHiddenStates: ehs, guidanceScale: 2 })).rejects.toThrow(/encoderHiddenStates/);
    await expect(ort.predict({ sample: host('s', [1, 4, 4, 4]), timestep: 1, encoderHiddenStates: half(ehs, 0) })).rejects.toThrow(/sample/);
    await expect(ort.predict({ sample: host('s', [1, 3, 4, 4]), timestep: [1, 2, 3], encoderHiddenStates: half(ehs, 0) })).rejects.toThrow(/timestep/);
  });
});

describe('fixed-size exports and export folders', () => {
  let tmp: string;
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'aptp-ort-engine-'));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('a fixed-batch export runs its size and names the fixed dim otherwise', async () => {
    const engine = await OrtUNetEngine.fromExport(exportUNetToOnnx(cfg, hostSource(weights), { batch: 2, height: 4, width: 4, sequenceLength: 3 }));
    try {
      const ok = await engine.predictGuided({ sample: host('s', [1, 3, 4, 4]), timestep: 3, encoderHiddenStates: cfgContext(1, 3), guidanceScale: 3 });
      expect(ok.dims).toEqual([1, 3, 4, 4]);
      await expect(engine.predict({ sample: host('s', [1, 3, 4, 4]), timestep: 3, encoderHiddenStates: host('e', [1, 3, 6]) })).rejects.toThrow(/sample: the exported model has a fixed size.*\[2,3,4,4\]/);
    } finally {
      await engine.dispose();
    }
  });

  it('exportUNetFolder writes model.onnx + aptp_onnx.json; a missing file is named', async () => {
    const src = path.join(tmp, 'unet');
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, 'config.json'), JSON.stringify(TINY));
    writeSafetensors(path.join(src, 'diffusion_pytorch_model.safetensors'), Object.fromEntries(weights));
    const out = path.join(tmp, 'onnx');
    const info = exportUNetFolder(src, out);
    expect(info).toEqual(readOnnxUNetInfo(out));
    expect(info.inputs.sample).toEqual(['batch', 3, 'height', 'width']);
    expect(info.externalData).toBe(false);
    expect(fs.existsSync(path.join(out, ONNX_FILES.data))).toBe(false);
    const engine = await OrtUNetEngine.load(out);
    const r = await engine.predict({ sample: host('s', [1, 3, 4, 4]), timestep: [5], encoderHiddenStates: host('e', [1, 2, 6]) });
    expect(r.dims).toEqual([1, 3, 4, 4]);
    await engine.dispose();
    fs.rmSync(path.join(out, ONNX_FILES.info));
    expect(() => readOnnxUNetInfo(out)).toThrow(/aptp_onnx\.json/);
    await expect(OrtUNetEngine.load(out)).rejects.toThrow(/incomplete/);
  });
});

describeBackends('OrtUNetEngine vs TfjsUNetEngine', () => {
  let unet: UNet2DConditionModel<tf.Tensor>;
  let ort: OrtUNetEngine;
  let tfe: TfjsUNetEngine;
  beforeAll(async () => {
    unet = createEagerUNet(cfg, hostSource(weights));
    tfe = new TfjsUNetEngine(unet);
    ort = await OrtUNetEngine.fromExport(exportUNetToOnnx(cfg, hostSource(weights)), { intraOpNumThreads: 2 });
  });
  afterAll(async () => {
    await Promise.all([ort.dispose(), tfe.dispose()]);
    unet.dispose();
  });

  it('agree on plain and guided steps (per-item timesteps too)', async () => {
    const sample = host('x', [2, 3, 4, 8]);
    const ehs = host('e', [2, 4, 6]);
    const step = { sample, timestep: [999, 3], encoderHiddenStates: ehs };
    expectClose((await ort.predict(step)).data, (await tfe.predict(step)).data, { name: 'predict ort vs tfjs' });
    const g = { sample, timestep: 500, encoderHiddenStates: cfgContext(2, 4), guidanceScale: 7.5 };
    const [a, b] = [await ort.predictGuided(g), await tfe.predictGuided(g)];
    expect(a.dims).toEqual(b.dims);
    expectClose(a.data, b.data, { name: 'guided ort vs tfjs' });
  });

  it('the tfjs engine leaves no tensors behind across steps', async () => {
    const g = { sample: host('x', [1, 3, 4, 4]), timestep: 20, encoderHiddenStates: cfgContext(1, 2), guidanceScale: 4 };
    let i = 0;
    await expectNoTensorLeak(async () => {
      await tfe.predictGuided({ ...g, timestep: 20 + i++ });
      await tfe.predict({ sample: g.sample, timestep: i, encoderHiddenStates: half(g.encoderHiddenStates, 0) });
    }, { name: 'tfjs engine steps' });
    expect(tf.memory().numTensors).toBeGreaterThan(0); // the model's weights are alive
  });
});
