import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { AptpError, DDIMScheduler, InputError, NumericError, Rng, type HostTensor } from '@aptp/core';
import { describeBackends, expectNoTensorLeak } from '@aptp/core/testing';
import { parseUNetConfig } from '../config';
import type { HostArray, UNetEngine, UNetStepInput } from '../engines/engine';
import { TfjsUNetEngine } from '../engines/tfjs';
import { exportUNetFolder } from '../export/onnx';
import { createEagerUNet, loadUNet, type UNet2DConditionModel } from '../unet';
import { hostSource, randomUNetWeights } from '../weights';
import { ClipTextConditioner } from './clipText';
import { SD21_SCHEDULER, tempDir, tinyUNetJson, writeSdStyleModel } from './testFixtures';
import {
  TextToImagePipeline,
  combineGuidancePerItem,
  initialNoise,
  loadTextToImage,
  loadUNetEngine,
  planGroups,
  type TextToImageRequest,
} from './textToImage';
import { PixelDecoder } from './vae';
import type { TextConditioner } from './conditioning';

const S = 3;
const D = 6;

/** A deterministic conditioner: each prompt's [S, D] states are normals keyed by the prompt text. */
class HashConditioner implements TextConditioner {
  readonly sequenceLength = S;
  readonly dim = D;
  calls: string[][] = [];
  async embed(prompts: readonly string[]): Promise<HostArray> {
    this.calls.push([...prompts]);
    const data = new Float32Array(prompts.length * S * D);
    prompts.forEach((p, i) => data.set(HashConditioner.states(p), i * S * D));
    return { data, dims: [prompts.length, S, D] };
  }
  async encode(prompts: readonly string[]): Promise<tf.Tensor3D> {
    const h = await this.embed(prompts);
    return tf.tensor3d(h.data, [prompts.length, S, D]);
  }
  dispose(): void {}
  static states(p: string): Float32Array {
    return Rng.forKey(11, 'prompt', p).normal(S * D);
  }
}

/** Records what the UNet receives (and can replace its output). */
class SpyEngine implements UNetEngine {
  readonly kind = 'spy';
  calls: UNetStepInput[] = [];
  constructor(
    private readonly inner: UNetEngine,
    private readonly map?: (out: HostArray) => HostArray,
  ) {}
  async predict(input: UNetStepInput): Promise<HostArray> {
    this.calls.push({ sample: { data: input.sample.data.slice(), dims: [...input.sample.dims] }, timestep: input.timestep, encoderHiddenStates: input.encoderHiddenStates });
    const out = await this.inner.predict(input);
    return this.map ? this.map(out) : out;
  }
  predictGuided(): Promise<HostArray> {
    throw new Error('not used');
  }
  async dispose(): Promise<void> {}
}

const PIXEL_CFG = parseUNetConfig(tinyUNetJson(3, D));

function pixelUNet(): UNet2DConditionModel<tf.Tensor> {
  return createEagerUNet(PIXEL_CFG, hostSource(randomUNetWeights(PIXEL_CFG, 4, 0.2) as Map<string, HostTensor>));
}

function pipeline(conditioner: TextConditioner = new HashConditioner()): TextToImagePipeline {
  return new TextToImagePipeline({ conditioner, decoder: new PixelDecoder(), scheduler: { raw: SD21_SCHEDULER }, sampleChannels: 3 });
}

const req = (prompt: string, seed: number, extra: Partial<TextToImageRequest> = {}): TextToImageRequest => ({ prompt, seed, steps: 3, guidance: 4, width: 8, height: 8, ...extra });

const toByte = (x: number) => Math.round(Math.min(1, Math.max(0, x / 2 + 0.5)) * 255);

describe('planGroups / combineGuidancePerItem / initialNoise', () => {
  it('groups requests that can share UNet calls, in first-seen order', () => {
    const rs = [req('a', 1), req('b', 2, { steps: 5 }), req('c', 3, { guidance: 1 }), req('d', 4, { guidance: 9 }), req('e', 5, { width: 16 }), req('f', 6, { steps: 5, guidance: 2 })];
    expect(planGroups(rs)).toEqual([[0, 3], [1, 5], [2], [4]]);
  });

  it('combines u + w_b (c − u) per item (uncond rows first)', () => {
    const both = new Float32Array([1, 2, 3, 4, 10, 20, 30, 40]); // B = 2, 2 values each
    expect(Array.from(combineGuidancePerItem(both, [2, 0.5]))).toEqual([1 + 2 * 9, 2 + 2 * 18, 3 + 0.5 * 27, 4 + 0.5 * 36]);
  });

  it('draws x_T from Rng.forKey(seed, "latents")', () => {
    expect(Array.from(initialNoise(7, 3, 2, 2))).toEqual(Array.from(Rng.forKey(7, 'latents').normal(12)));
  });
});

describeBackends('TextToImagePipeline numerics (pixel space, tiny random UNet)', (backend) => {
  let unet: UNet2DConditionModel<tf.Tensor>;
  let engine: TfjsUNetEngine;
  beforeAll(() => {
    unet = pixelUNet();
    engine = new TfjsUNetEngine(unet);
  });
  afterAll(() => unet.dispose());

  it('equals a hand-written DDIM loop with batched classifier-free guidance (per-item scales)', async () => {
    const rs = [req('red circle', 3, { guidance: 3, steps: 2 }), req('blue square', 8, { guidance: 6.5, steps: 2 })];
    const got = await pipeline().generate(engine, rs, { scheduler: 'DDIMScheduler' });
    // the reference loop: x_T from the seeds, UNet on [u, u, c1, c2] states and [x, x] samples, ε = u + w (c − u)
    const sched = new DDIMScheduler({ betaStart: 0.00085, betaEnd: 0.012, betaSchedule: 'scaled_linear', predictionType: 'v_prediction', clipSample: false, setAlphaToOne: false, stepsOffset: 1 });
    sched.setTimesteps(2);
    const per = 3 * 8 * 8;
    let x = tf.tensor(new Float32Array([...initialNoise(3, 3, 8, 8), ...initialNoise(8, 3, 8, 8)]), [2, 3, 8, 8]);
    const u = HashConditioner.states('');
    const ehs = tf.tensor(new Float32Array([...u, ...u, ...HashConditioner.states('red circle'), ...HashConditioner.states('blue square')]), [4, S, D]);
    for (const t of sched.timesteps) {
      const out = unet.forward({ sample: tf.concat([x, x]), timestep: t, encoderHiddenStates: ehs });
      const o = out.sample.dataSync();
      tf.dispose([out.sample, ...Object.values(out.blocks)]);
      const eps = new Float32Array(2 * per);
      for (let k = 0; k < 2 * per; k++) {
        const w = k < per ? 3 : 6.5;
        eps[k] = o[k]! + w * (o[2 * per + k]! - o[k]!);
      }
      const e = tf.tensor(eps, [2, 3, 8, 8]);
      const next = sched.step(e, t, x).prevSample;
      tf.dispose([e, x]);
      x = next;
    }
    const final = x.dataSync();
    tf.dispose([x, ehs]);
    for (let b = 0; b < 2; b++) {
      expect(got[b]!.width).toBe(8);
      expect(got[b]!.unetCalls).toBe(2);
      expect(got[b]!.groupSize).toBe(2);
      const expected = new Uint8Array(per);
      for (let p = 0; p < 64; p++) for (let c = 0; c < 3; c++) expected[p * 3 + c] = toByte(final[b * per + c * 64 + p]!);
      expect(Buffer.from(got[b]!.rgb).equals(Buffer.from(expected))).toBe(true);
    }
    // the images are not flat: the UNet and the noise reach the pixels
    expect(new Set(got[0]!.rgb).size).toBeGreaterThan(20);
  });

  it('an image does not depend on the rest of its batch (PNDM, DDIM, DPM-Solver++)', async () => {
    // cpu is slow: it checks PNDM (APTP's sampler) only
    const schedulers = backend === 'cpu' ? (['PNDMScheduler'] as const) : (['PNDMScheduler', 'DDIMScheduler', 'DPMSolverMultistepScheduler'] as const);
    for (const scheduler of schedulers) {
      const p = pipeline();
      const target = req('a red circle', 42, { guidance: 5, steps: 2 });
      const [alone] = await p.generate(engine, [target], { scheduler });
      const mixed = await p.generate(engine, [req('blue', 1, { guidance: 2, steps: 2 }), target, req('green square', 42, { guidance: 9, steps: 2 })], { scheduler });
      expect(Buffer.from(mixed[1]!.rgb).equals(Buffer.from(alone!.rgb))).toBe(true);
      expect(Buffer.from(mixed[2]!.rgb).equals(Buffer.from(alone!.rgb))).toBe(false);
      expect(Buffer.from(mixed[0]!.rgb).equals(Buffer.from(alone!.rgb))).toBe(false);
      // another seed, same prompt: another image
      const [other] = await p.generate(engine, [req('a red circle', 43, { guidance: 5, steps: 2 })], { scheduler });
      expect(Buffer.from(other!.rgb).equals(Buffer.from(alone!.rgb))).toBe(false);
    }
  });
});

describeBackends('TextToImagePipeline mechanics (pixel space, tiny random UNet)', () => {
  let unet: UNet2DConditionModel<tf.Tensor>;
  let engine: TfjsUNetEngine;
  beforeAll(() => {
    unet = pixelUNet();
    engine = new TfjsUNetEngine(unet);
  });
  afterAll(() => unet.dispose());

  it('runs mixed requests as separate groups and keeps their order', async () => {
    const p = pipeline();
    const rs = [req('a', 1, { steps: 2 }), req('b', 2, { steps: 3, width: 4, height: 4 }), req('c', 3, { steps: 2, guidance: 1 }), req('d', 4, { steps: 2 })];
    const spy = new SpyEngine(engine);
    const got = await p.generate(spy, rs, { scheduler: 'DDIMScheduler' });
    expect(got.map((g) => [g.width, g.height, g.groupSize])).toEqual([[8, 8, 2], [4, 4, 1], [8, 8, 1], [8, 8, 2]]);
    expect(spy.calls.map((c) => c.sample.dims[0])).toEqual([4, 4, 2, 2, 2, 1, 1]);
    for (const [i, r] of rs.entries()) {
      const [alone] = await p.generate(engine, [r], { scheduler: 'DDIMScheduler' });
      expect(Buffer.from(got[i]!.rgb).equals(Buffer.from(alone!.rgb))).toBe(true);
    }
  });

  it('feeds the UNet [uncond ‖ cond] states and [x ‖ x] samples with guidance, only cond without (w ≤ 1)', async () => {
    const c = new HashConditioner();
    const spy = new SpyEngine(engine);
    await pipeline(c).generate(spy, [req('p1', 1), req('p2', 2)], { scheduler: 'DDIMScheduler' });
    const first = spy.calls[0]!;
    expect(first.sample.dims).toEqual([4, 3, 8, 8]);
    const n = 2 * 3 * 64;
    expect(Array.from(first.sample.data.subarray(0, n))).toEqual(Array.from(first.sample.data.subarray(n)));
    expect(Array.from(first.sample.data.subarray(0, 192))).toEqual(Array.from(initialNoise(1, 3, 8, 8)));
    const e = first.encoderHiddenStates;
    expect(e.dims).toEqual([4, S, D]);
    const rows = ['', '', 'p1', 'p2'].map((p) => Array.from(HashConditioner.states(p)));
    expect(Array.from(e.data)).toEqual(rows.flat());
    // prompts are encoded alone (so their states never depend on the batch), each once
    expect(c.calls).toEqual([['p1'], ['p2'], ['']]);
    spy.calls = [];
    await pipeline(c).generate(spy, [req('p1', 1, { guidance: 1 })], { scheduler: 'DDIMScheduler' });
    expect(spy.calls[0]!.sample.dims).toEqual([1, 3, 8, 8]);
    expect(Array.from(spy.calls[0]!.encoderHiddenStates.data)).toEqual(rows[2]);
  });

  it('keeps the tensor count flat across denoising steps and leaks nothing', async () => {
    const p = pipeline();
    for (const scheduler of ['DDIMScheduler', 'PNDMScheduler', 'DPMSolverMultistepScheduler'] as const) {
      const counts: number[] = [];
      await p.generate(engine, [req('a', 1, { steps: 8 }), req('b', 2, { steps: 8 })], { scheduler, onProgress: () => counts.push(tf.memory().numTensors) });
      // DDIM keeps no history; PNDM at most 4 outputs + 1 sample, DPM-Solver++ its last outputs: flat once filled
      const tail = counts.slice(5);
      expect(new Set(tail).size).toBe(1);
      expect(Math.max(...counts) - counts[0]!).toBeLessThanOrEqual(5);
      if (scheduler === 'DDIMScheduler') expect(new Set(counts).size).toBe(1);
      await expectNoTensorLeak(() => p.generate(engine, [req('a', 1, { steps: 3 })], { scheduler }).then(() => undefined), { name: scheduler, warmup: 1, steps: 2 });
    }
  });

  it('rejects bad requests, eta without DDIM, a non-finite UNet output and an aborted signal', async () => {
    const p = pipeline();
    await expect(p.generate(engine, [req('a', 1, { steps: 0 })])).rejects.toThrow(InputError);
    await expect(p.generate(engine, [req('a', 1.5)])).rejects.toThrow(/requests\[0\]\.seed/);
    await expect(p.generate(engine, [req('a', 1)], { scheduler: 'PNDMScheduler', eta: 0.5 })).rejects.toThrow(/eta/);
    const nan = new SpyEngine(engine, (o) => ({ data: o.data.map(() => NaN), dims: o.dims }));
    await expect(p.generate(nan, [req('a', 1, { steps: 1 })], { scheduler: 'DDIMScheduler' })).rejects.toThrow(NumericError);
    const ac = new AbortController();
    ac.abort();
    const before = tf.memory().numTensors;
    await expect(p.generate(engine, [req('a', 1)], { signal: ac.signal })).rejects.toMatchObject({ code: 'E_ABORTED' });
    expect(tf.memory().numTensors).toBe(before);
    await expect(p.generate(engine, [req('a', 1)], { signal: ac.signal })).rejects.toBeInstanceOf(AptpError);
  });

  it('DDIM with eta > 0 draws its noise per prompt (batch-independent, and different from eta = 0)', async () => {
    const p = pipeline();
    const t = req('x', 5);
    const [a] = await p.generate(engine, [t], { scheduler: 'DDIMScheduler', eta: 1 });
    const [, b] = await p.generate(engine, [req('y', 6), t], { scheduler: 'DDIMScheduler', eta: 1 });
    const [c] = await p.generate(engine, [t], { scheduler: 'DDIMScheduler' });
    expect(Buffer.from(a!.rgb).equals(Buffer.from(b!.rgb))).toBe(true);
    expect(Buffer.from(a!.rgb).equals(Buffer.from(c!.rgb))).toBe(false);
  });
}, ['wasm']);

describe('loadTextToImage (SD-style folder: text_encoder + tokenizer + vae_decoder in ONNX, tiny latent UNet)', () => {
  it('loads the folder and equals the pipeline assembled from its parts', async () => {
    const dir = tempDir();
    writeSdStyleModel(dir);
    const p = await loadTextToImage(dir, { engine: 'tfjs' });
    const rs = [req('a red circle', 1, { width: 16, height: 16, steps: 2 }), req('blue', 2, { width: 16, height: 16, steps: 2, guidance: 7.5 })];
    try {
      expect(p.scaleFactor).toBe(2);
      expect(p.unet?.kind).toBe('tfjs');
      const got = await p.generate(p.unet!, rs, { scheduler: 'DDIMScheduler' });
      expect(got.map((g) => [g.width, g.height])).toEqual([[16, 16], [16, 16]]);
      // by hand: the same parts
      const text = await ClipTextConditioner.load(dir);
      const { OrtVaeDecoder } = await import('./vae');
      const vae = await OrtVaeDecoder.load(path.join(dir, 'vae_decoder'));
      const model = await loadUNet(path.join(dir, 'unet'));
      const manual = new TextToImagePipeline({ conditioner: text, decoder: vae, scheduler: { raw: SD21_SCHEDULER }, sampleChannels: 4 });
      const ref = await manual.generate(new TfjsUNetEngine(model), rs, { scheduler: 'DDIMScheduler' });
      await manual.dispose();
      model.dispose();
      rs.forEach((_, i) => expect(Buffer.from(got[i]!.rgb).equals(Buffer.from(ref[i]!.rgb))).toBe(true));
      expect(new Set(got[0]!.rgb).size).toBeGreaterThan(10);
    } finally {
      await p.dispose();
      await p.dispose();
    }
  });

  it('runs the UNet on ORT when unet/onnx/ holds an export (close to tfjs)', async () => {
    const dir = tempDir();
    writeSdStyleModel(dir);
    exportUNetFolder(path.join(dir, 'unet'), path.join(dir, 'unet', 'onnx'));
    const ort = await loadUNetEngine(path.join(dir, 'unet'));
    const tfjs = await loadUNetEngine(path.join(dir, 'unet'), { engine: 'tfjs' });
    const p = await loadTextToImage(dir, { unet: false });
    try {
      expect(ort.kind).toBe('ort');
      const rs = [req('a red circle', 1, { width: 16, height: 16, steps: 2 })];
      const [a] = await p.generate(ort, rs, { scheduler: 'DDIMScheduler' });
      const [b] = await p.generate(tfjs, rs, { scheduler: 'DDIMScheduler' });
      let maxDiff = 0;
      a!.rgb.forEach((v, i) => (maxDiff = Math.max(maxDiff, Math.abs(v - b!.rgb[i]!))));
      expect(maxDiff).toBeLessThanOrEqual(1);
      // on ORT too, an image does not depend on the rest of its batch
      const [, mixed] = await p.generate(ort, [req('blue', 9, { width: 16, height: 16, steps: 2, guidance: 2 }), rs[0]!], { scheduler: 'DDIMScheduler' });
      expect(Buffer.from(mixed!.rgb).equals(Buffer.from(a!.rgb))).toBe(true);
    } finally {
      await Promise.all([ort.dispose(), tfjs.dispose(), p.dispose()]);
    }
  });

  it('loads a pixel-space synthetic-world folder (conditioning/config.json, no VAE) and checks the text width', async () => {
    const dir = tempDir();
    const { writeTinyUNet, writeScheduler } = await import('./testFixtures');
    const { HashedTextConditioner } = await import('./conditioning');
    writeTinyUNet(path.join(dir, 'unet'), 3, 8);
    writeScheduler(dir);
    new HashedTextConditioner({ dim: 8, sequenceLength: 6, seed: 3 }).save(dir);
    const p = await loadTextToImage(dir, { engine: 'tfjs' });
    try {
      expect(p.scaleFactor).toBe(1);
      const [img] = await p.generate(p.unet!, [req('the letter A', 1, { steps: 2 })]);
      expect([img!.width, img!.height, img!.rgb.length]).toEqual([8, 8, 8 * 8 * 3]);
      const [again] = await p.generate(p.unet!, [req('the letter A', 1, { steps: 2 })]);
      expect(Buffer.from(again!.rgb).equals(Buffer.from(img!.rgb))).toBe(true);
    } finally {
      await p.dispose();
    }
    new HashedTextConditioner({ dim: 5 }).save(dir);
    await expect(loadTextToImage(dir, { unet: false })).rejects.toThrow(/cross_attention_dim: expected 8, found 5/);
    fs.rmSync(path.join(dir, 'conditioning'), { recursive: true });
    await expect(loadTextToImage(dir, { unet: false })).rejects.toThrow(/text_encoder\/model\.onnx.*conditioning\/config\.json/);
  });

  it('lists the expected files of a missing part', async () => {
    const dir = tempDir();
    writeSdStyleModel(dir);
    fs.rmSync(path.join(dir, 'vae_decoder'), { recursive: true });
    await expect(loadTextToImage(dir, { unet: false })).rejects.toThrow(/vae_decoder\/model\.onnx/);
    const dir2 = tempDir();
    writeSdStyleModel(dir2);
    fs.rmSync(path.join(dir2, 'tokenizer'), { recursive: true });
    await expect(loadTextToImage(dir2, { unet: false })).rejects.toThrow(/tokenizer/);
    fs.rmSync(path.join(dir2, 'unet', 'config.json'));
    await expect(loadTextToImage(dir2, { unet: false })).rejects.toThrow(/unet\/\{config\.json, diffusion_pytorch_model\.safetensors\}/);
    await expect(loadUNetEngine(path.join(dir, 'unet'), { engine: 'ort' })).rejects.toThrow(/onnx\/\{model\.onnx, aptp_onnx\.json\}/);
  });
});
