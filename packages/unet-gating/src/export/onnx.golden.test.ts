import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { OrtModel, toTfTensor, f16ToF32, f32ToF16, type HostTensor } from '@aptp/core';
import { describeBackends, describeGolden, expectClose, readGoldenTensors } from '@aptp/core/testing';
import { readUNetConfig } from '../config';
import { createEagerUNet } from '../unet';
import { hostSource, safetensorsSource, type WeightSource } from '../weights';
import { expertConfig, prunedWeightSource } from '../experts';
import { prunedArchitecture } from '../prune';
import { aptpLayout } from '../gates/layout';
import { exportUNetFolder, exportUNetToOnnx, ONNX_FILES, type OnnxExportOptions } from './onnx';
import { OrtUNetEngine } from '../engines/ort';

/**
 * The ONNX export runs the same block code as the tfjs model (through OnnxOps); its ONNX Runtime output must match
 * the golden diffusers outputs and the tfjs forward within 1e-4·max(1, max|ref|) (issue 10, golden README §2.6):
 * golden/unet-tiny, unet-tiny-b, the golden pruned expert (aptp/pruned) and experts sliced by prune.ts.
 */

type Feeds = { sample: HostTensor; timestep: HostTensor; encoder_hidden_states: HostTensor };

const f32 = (t: HostTensor) => t.data as Float32Array;

async function runOnnx(bytes: Uint8Array, io: Feeds, outputs?: string[]): Promise<Record<string, Float32Array>> {
  const model = await OrtModel.load(bytes, { name: 'unet.onnx', intraOpNumThreads: 1 });
  try {
    const res = await model.run(
      {
        sample: { data: f32(io.sample), dims: io.sample.shape },
        timestep: { data: f32(io.timestep), dims: io.timestep.shape },
        encoder_hidden_states: { data: f32(io.encoder_hidden_states), dims: io.encoder_hidden_states.shape },
      },
      outputs,
    );
    return Object.fromEntries(Object.entries(res).map(([k, v]) => [k, v.data as Float32Array]));
  } finally {
    await model.dispose();
  }
}

function feedsOf(io: Map<string, HostTensor>, prefix = ''): Feeds {
  return { sample: io.get(`${prefix}sample`)!, timestep: io.get(`${prefix}timestep`)!, encoder_hidden_states: io.get(`${prefix}encoder_hidden_states`)! };
}

/** The tfjs forward (current backend) of a model built from `source`. */
function tfjsForward(config: ReturnType<typeof readUNetConfig>, source: WeightSource, io: Feeds, pruned: boolean): { sample: Float32Array; blocks: Record<string, Float32Array> } {
  const unet = createEagerUNet(config, source, { pruned });
  try {
    return tf.tidy(() => {
      const out = unet.forward({ sample: toTfTensor(io.sample), timestep: toTfTensor(io.timestep), encoderHiddenStates: toTfTensor(io.encoder_hidden_states) });
      return {
        sample: out.sample.dataSync() as Float32Array,
        blocks: Object.fromEntries(Object.entries(out.blocks).map(([k, v]) => [k, v.dataSync() as Float32Array])),
      };
    });
  } finally {
    unet.dispose();
  }
}

/** A random input set of the given sizes (latents, timesteps, text states). */
function randomFeeds(b: number, c: number, h: number, w: number, s: number, d: number, seed: number): Feeds {
  const n = (k: number) => Float32Array.from({ length: k }, (_, i) => Math.sin(seed * 7919 + i * 12.9898) * 1.5);
  return {
    sample: { dtype: 'float32', shape: [b, c, h, w], data: n(b * c * h * w) },
    timestep: { dtype: 'float32', shape: [b], data: Float32Array.from({ length: b }, (_, i) => (seed * 37 + i * 411) % 1000) },
    encoder_hidden_states: { dtype: 'float32', shape: [b, s, d], data: n(b * s * d).map((v) => v * 0.7) },
  };
}

const GOLDEN_BLOCKS: Record<string, string> = {
  down0: 'down_blocks.0.hidden_states',
  mid: 'mid_block',
  up0: 'up_blocks.0',
};

for (const name of ['unet-tiny', 'unet-tiny-b']) {
  describeGolden(name, `ONNX export of golden/${name}`, (dir) => {
    const config = readUNetConfig(path.join(dir, 'config.json'));
    const weights = path.join(dir, 'diffusion_pytorch_model.safetensors');
    let io: Map<string, HostTensor>;
    let dynamicBytes: Uint8Array;
    beforeAll(() => {
      io = readGoldenTensors(path.join(dir, 'io.safetensors'));
      const src = safetensorsSource(weights);
      try {
        dynamicBytes = exportUNetToOnnx(config, src, { blockOutputs: true }).toBytes();
      } finally {
        src.close();
      }
    });

    it('dynamic export: out_sample and block outputs match the golden diffusers tensors', async () => {
      const out = await runOnnx(dynamicBytes, feedsOf(io));
      expectClose(out.out_sample!, f32(io.get('out_sample')!), { name: `${name} onnx out_sample` });
      for (const [k, ref] of Object.entries(GOLDEN_BLOCKS)) expectClose(out[`blocks.${k}`]!, f32(io.get(ref)!), { name: `${name} onnx blocks.${k}` });
    });

    it('fixed-size export (batch, H, W, S) gives the same output', async () => {
      const [b, , h, w] = io.get('sample')!.shape as [number, number, number, number];
      const s = io.get('encoder_hidden_states')!.shape[1]!;
      const src = safetensorsSource(weights);
      const bytes = exportUNetToOnnx(config, src, { batch: b, height: h, width: w, sequenceLength: s, attention: name === 'unet-tiny-b' ? 'standard' : 'fused' }).toBytes();
      src.close();
      const out = await runOnnx(bytes, feedsOf(io));
      expectClose(out.out_sample!, f32(io.get('out_sample')!), { name: `${name} fixed out_sample` });
    });

    describeBackends(`${name}: ONNX vs the tfjs forward at other sizes`, (backend) => {
      it('batch 3, other spatial size and token count (one dynamic model)', async () => {
        const sizes = name === 'unet-tiny' ? [3, 8, 8, 11] : [3, 4, 12, 9]; // H, W multiples of 2^(down blocks − 1)
        const [b, h, w, s] = sizes as [number, number, number, number];
        const feeds = randomFeeds(b, config.inChannels, h, w, s, config.crossAttentionDim, backend === 'cpu' ? 1 : 2);
        const src = safetensorsSource(weights);
        const ref = tfjsForward(config, src, feeds, false);
        src.close();
        const out = await runOnnx(dynamicBytes, feeds);
        expectClose(out.out_sample!, ref.sample, { name: `${name} onnx vs tfjs (${backend}) out_sample` });
        for (const k of Object.keys(ref.blocks)) expectClose(out[`blocks.${k}`]!, ref.blocks[k]!, { name: `${name} onnx vs tfjs (${backend}) blocks.${k}` });
      });
    });
  });
}

describeGolden('unet-tiny-b', 'ONNX export folders (external data, fp16 weights)', (dir) => {
  const config = readUNetConfig(path.join(dir, 'config.json'));
  let tmp: string;
  let io: Map<string, HostTensor>;
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'aptp-onnx-'));
    io = readGoldenTensors(path.join(dir, 'io.safetensors'));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('exports a folder with external data that the ORT engine loads from its path', async () => {
    const out = path.join(tmp, 'ext');
    const info = exportUNetFolder(dir, out, { externalData: true });
    expect(info.externalData).toBe(true);
    expect(info.parameters).toBe(303_420);
    const modelBytes = fs.statSync(path.join(out, ONNX_FILES.model)).size;
    const dataBytes = fs.statSync(path.join(out, ONNX_FILES.data)).size;
    expect(dataBytes).toBeGreaterThan(4 * 290_000);
    expect(modelBytes).toBeLessThan(200_000);
    const engine = await OrtUNetEngine.load(out, { intraOpNumThreads: 1 });
    try {
      const r = await engine.predict({
        sample: { data: f32(io.get('sample')!), dims: io.get('sample')!.shape },
        timestep: f32(io.get('timestep')!),
        encoderHiddenStates: { data: f32(io.get('encoder_hidden_states')!), dims: io.get('encoder_hidden_states')!.shape },
      });
      expect(r.dims).toEqual(io.get('out_sample')!.shape);
      expectClose(r.data, f32(io.get('out_sample')!), { name: 'external-data folder out_sample' });
    } finally {
      await engine.dispose();
    }
  });

  it('fp16 weights: half the size, and equal to the tfjs model with fp16-rounded weights', async () => {
    const src = safetensorsSource(path.join(dir, 'diffusion_pytorch_model.safetensors'));
    const rounded = new Map<string, HostTensor>();
    for (const k of src.keys()) {
      const t = src.read(k);
      rounded.set(k, { dtype: 'float32', shape: t.shape, data: Float32Array.from(t.data as Float32Array, (v) => f16ToF32(f32ToF16(v))) });
    }
    const full = exportUNetToOnnx(config, src).toBytes();
    const half = exportUNetToOnnx(config, src, { weightDtype: 'float16' }).toBytes();
    src.close();
    expect(half.length).toBeLessThan(0.6 * full.length);
    const feeds = feedsOf(io);
    const out = await runOnnx(half, feeds);
    const ref = tfjsForward(config, hostSource(rounded), feeds, false);
    expectClose(out.out_sample!, ref.sample, { name: 'fp16-weight onnx vs tfjs(fp16-rounded)' });
    // the rounding is visible against the fp32 golden output, so the test above is not vacuous
    const d = out.out_sample!.reduce((m, v, i) => Math.max(m, Math.abs(v - f32(io.get('out_sample')!)[i]!)), 0);
    expect(d).toBeGreaterThan(1e-6);
  });
});

describeGolden('aptp', 'ONNX export of pruned experts (golden aptp)', (dir) => {
  const BLOCKS: Record<string, string> = { d0: 'down0', d1: 'down1', d2: 'down2', d3: 'down3', m: 'mid', u0: 'up0', u1: 'up1', u2: 'up2', u3: 'up3' };
  let pio: Map<string, HostTensor>;
  beforeAll(() => {
    pio = readGoldenTensors(path.join(dir, 'pruned', 'io.safetensors'));
  });
  const options: OnnxExportOptions = { pruned: true, blockOutputs: true };

  it('the golden pruned expert folder (aptp/pruned): out_sample and the 9 block outputs', async () => {
    const pdir = path.join(dir, 'pruned');
    const src = safetensorsSource(path.join(pdir, 'diffusion_pytorch_model.safetensors'));
    const exported = exportUNetToOnnx(readUNetConfig(path.join(pdir, 'config.json')), src, options);
    src.close();
    expect(exported.info.parameters).toBe(467_124);
    const out = await runOnnx(exported.toBytes(), feedsOf(pio));
    expectClose(out.out_sample!, f32(pio.get('pruned.out_sample')!), { name: 'pruned onnx out_sample' });
    for (const [ref, ours] of Object.entries(BLOCKS)) expectClose(out[`blocks.${ours}`]!, f32(pio.get(`pruned.${ref}`)!), { name: `pruned onnx ${ref}` });
  });

  it('an expert sliced on the fly by prune.ts from the base weights equals the golden pruned model', async () => {
    const cfg = readUNetConfig(path.join(dir, 'config.json'));
    const base = safetensorsSource(path.join(dir, 'diffusion_pytorch_model.safetensors'));
    const plan = prunedArchitecture(aptpLayout(cfg), f32(pio.get('arch_vector')!));
    const bytes = exportUNetToOnnx(expertConfig(cfg), prunedWeightSource(base, plan), options).toBytes();
    base.close();
    const out = await runOnnx(bytes, feedsOf(pio));
    expectClose(out.out_sample!, f32(pio.get('pruned.out_sample')!), { name: 'sliced expert onnx out_sample' });
    for (const [ref, ours] of Object.entries(BLOCKS)) expectClose(out[`blocks.${ours}`]!, f32(pio.get(`pruned.${ref}`)!), { name: `sliced expert onnx ${ref}` });
  });

  describeBackends('another expert (gates.hard row 1) vs its tfjs forward', (backend) => {
    it('matches the tfjs expert on out_sample and every block output', async () => {
      const cfg = readUNetConfig(path.join(dir, 'config.json'));
      const gio = readGoldenTensors(path.join(dir, 'gated_forward.safetensors'));
      const hard = gio.get('gates.hard')!;
      const L = hard.shape[1]!;
      const row = f32(hard).subarray(L, 2 * L);
      const plan = prunedArchitecture(aptpLayout(cfg), row);
      const base = safetensorsSource(path.join(dir, 'diffusion_pytorch_model.safetensors'));
      try {
        const exported = exportUNetToOnnx(expertConfig(cfg), prunedWeightSource(base, plan), options);
        expect(exported.info.parameters).toBeLessThan(827_476);
        const feeds = randomFeeds(2, 4, 8, 8, 6, 32, backend === 'cpu' ? 3 : 4);
        const ref = tfjsForward(expertConfig(cfg), prunedWeightSource(base, plan), feeds, true);
        const out = await runOnnx(exported.toBytes(), feeds);
        expectClose(out.out_sample!, ref.sample, { name: `expert row 1 onnx vs tfjs (${backend})` });
        for (const k of Object.values(BLOCKS)) expectClose(out[`blocks.${k}`]!, ref.blocks[k]!, { name: `expert row 1 ${k}` });
      } finally {
        base.close();
      }
    });
  });

  it('the gated base config exports without gates and matches the all-ones gated forward', async () => {
    const gio = readGoldenTensors(path.join(dir, 'gated_forward.safetensors'));
    const src = safetensorsSource(path.join(dir, 'diffusion_pytorch_model.safetensors'));
    const bytes = exportUNetToOnnx(readUNetConfig(path.join(dir, 'config.json')), src).toBytes();
    src.close();
    const out = await runOnnx(bytes, feedsOf(gio));
    expectClose(out.out_sample!, f32(gio.get('ones.out_sample')!), { name: 'gated config, no gates = ones gates' });
  });
});
