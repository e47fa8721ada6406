import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, OnnxGraph, Rng, writeJsonAtomic, writeSafetensors } from '@aptp/core';
import { expectClose, useBackend } from '@aptp/core/testing';
import type { Batch } from '@aptp/datasets';
import { HashedTextConditioner, loadExpert, macsModel, parseUNetConfig, randomUNetWeights } from '@aptp/unet-gating';
import { finetuneConfigFromArgs, type FinetuneCommandArgs } from '../commands/finetune';
import { parsePruneConfig, type PruneConfigInput } from '../config/reference';
import { startRun } from '../loop/startRun';
import { readMetrics } from '../runDir';
import { runFinetune } from './finetune';
import { loadTeacher, runPrune, teacherX0 } from './prune';
import { runRoute } from './route';

/**
 * prune and finetune with a LATENT teacher (APTP.md §5: x0 = scaling_factor · E(image), a keyed posterior sample): a
 * tiny UNet with 4 in/out channels, a tiny ONNX VAE encoder built here (2×2 average pooling + 1×1 conv to mean ‖
 * logvar, Optimum's `latent_parameters` output; block_out_channels of length 2, so f = 2: 16-px images → 8×8×4
 * latents) and the hashed text conditioner, on the synthetic world, on wasm. Mechanics only (random teacher).
 */
const UNET = {
  _class_name: 'UNet2DConditionModel',
  sample_size: 8,
  in_channels: 4,
  out_channels: 4,
  block_out_channels: [8, 16],
  down_block_types: ['DownBlock2D', 'CrossAttnDownBlock2D'],
  mid_block_type: 'UNetMidBlock2DCrossAttn',
  up_block_types: ['CrossAttnUpBlock2D', 'UpBlock2D'],
  layers_per_block: 2,
  attention_head_dim: [1, 2],
  cross_attention_dim: 8,
  norm_num_groups: 4,
  use_linear_projection: true,
  gated_ff: true,
  ff_gate_width: 4,
};
const SCALING = 0.18215;
const C = 4;

interface TinyEncoder {
  /** 1×1 conv `[2C, 3]` (mean rows, then logvar rows) and bias `[2C]`. */
  weight: Float32Array;
  bias: Float32Array;
}

function writeVaeEncoder(dir: string): TinyEncoder {
  const rng = Rng.forKey(3, 'vae-encoder');
  const weight = rng.normal(2 * C * 3, 0, 0.5);
  const bias = rng.normal(2 * C, 0, 0.2);
  const g = new OnnxGraph('vae_encoder', { opset: 17 });
  g.input('sample', 'float32', ['batch', 3, 'H', 'W']);
  const pooled = g.op('AveragePool', ['sample'], { kernel_shape: [2, 2], strides: [2, 2] });
  const w = g.initializer('quant_conv.weight', { data: weight, dims: [2 * C, 3, 1, 1] });
  const b = g.initializer('quant_conv.bias', { data: bias, dims: [2 * C] });
  g.op('Conv', [pooled, w, b], { kernel_shape: [1, 1] }, { output: 'latent_parameters' });
  g.output('latent_parameters', 'float32', ['batch', 2 * C, 'h', 'w']);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'model.onnx'), g.toBytes());
  writeJsonAtomic(path.join(dir, 'config.json'), { _class_name: 'AutoencoderKL', in_channels: 3, latent_channels: C, block_out_channels: [4, 8], scaling_factor: SCALING });
  return { weight, bias };
}

/** By hand: pooled pixels → mean, logvar; x0 = scaling·(mean + exp(clamp(logvar, −30, 20)/2)·ε). */
function x0Reference(vae: TinyEncoder, pixels: Float32Array, [B, , H, W]: readonly number[], eps: Float32Array[]): Float64Array {
  const h = H / 2;
  const w = W / 2;
  const out = new Float64Array(B * C * h * w);
  const px = (b: number, c: number, y: number, x: number): number => pixels[((b * 3 + c) * H! + y) * W! + x]!;
  for (let b = 0; b < B!; b++)
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        const p = [0, 1, 2].map((c) => (px(b, c, 2 * y, 2 * x) + px(b, c, 2 * y, 2 * x + 1) + px(b, c, 2 * y + 1, 2 * x) + px(b, c, 2 * y + 1, 2 * x + 1)) / 4);
        const row = (o: number): number => vae.bias[o]! + p.reduce((a, v, c) => a + vae.weight[o * 3 + c]! * v, 0);
        for (let c = 0; c < C; c++) {
          const k = (c * h + y) * w + x;
          const std = Math.exp(0.5 * Math.min(20, Math.max(-30, row(C + c))));
          out[b * C * h * w + k] = SCALING * (row(c) + std * eps[b]![k]!);
        }
      }
  return out;
}

function makeLatentTeacher(dir: string): TinyEncoder {
  fs.mkdirSync(path.join(dir, 'unet'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'scheduler'), { recursive: true });
  writeJsonAtomic(path.join(dir, 'unet/config.json'), UNET);
  writeSafetensors(path.join(dir, 'unet/diffusion_pytorch_model.safetensors'), Object.fromEntries(randomUNetWeights(parseUNetConfig(UNET), 7)));
  writeJsonAtomic(path.join(dir, 'scheduler/scheduler_config.json'), { _class_name: 'DDIMScheduler', num_train_timesteps: 1000, beta_schedule: 'scaled_linear', beta_start: 0.00085, beta_end: 0.012, prediction_type: 'v_prediction' });
  new HashedTextConditioner({ dim: 8, sequenceLength: 6 }).save(dir);
  return writeVaeEncoder(path.join(dir, 'vae_encoder'));
}

function pruneConfig(teacher: string, steps: number): PruneConfigInput {
  return {
    seed: 5,
    data: { dataset: { format: 'synthetic', imageSize: 16, numSamples: 12 }, loader: { transform: 'synthetic', seed: 3 } },
    model: { pretrainedModelNameOrPath: teacher, promptEncoder: { type: 'synthetic', dim: 16, seed: 0 }, router: { inputDim: 16, numCodes: 2 } },
    training: {
      trainBatchSize: 2,
      maxTrainSteps: steps,
      hypernetPretrainingSteps: 1,
      optim: { hypernetLearningRate: 2e-3, quantizerLearningRate: 2e-3, scaleLr: false, lrWarmupSteps: 0 },
      logging: { checkpointingSteps: 2 },
    },
  };
}

describe('prune and finetune with a latent teacher (VAE encoder, tiny, wasm)', () => {
  let tmp: string;
  let teacher: string;
  let vae: TinyEncoder;
  beforeAll(async () => {
    await useBackend('wasm');
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'aptp-latent-'));
    teacher = path.join(tmp, 'teacher');
    vae = makeLatentTeacher(teacher);
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('x0 of a batch = scaling · (keyed posterior sample of the encoder), by hand', async () => {
    const t = await loadTeacher(teacher);
    try {
      expect(t.imageEncoder.kind).toBe('vae');
      expect(t.imageEncoder.scaleFactor).toBe(2);
      const shape: [number, number, number, number] = [2, 3, 16, 16];
      const batch: Batch = { ids: ['row-4', 'row-9'], captions: ['a', 'b'], attributes: [undefined, undefined], pixels: Rng.forKey(1, 'pixels').uniform(2 * 3 * 16 * 16, -1, 1), shape, epoch: 0 };
      const key = (id: string) => Rng.forKey(5, 'prune', 7, id, 'vae');
      const x0 = await teacherX0(t, batch, key);
      expect(x0.dims).toEqual([2, 4, 8, 8]);
      const eps = batch.ids.map((id) => key(id).normal(C * 8 * 8));
      const r = expectClose(x0.data, x0Reference(vae, batch.pixels, shape, eps), { name: 'x0', rtol: 1e-6 });
      expect(r.maxAbsRef).toBeGreaterThan(0.1);
    } finally {
      await t.dispose();
    }
  });

  it('prune (pretrain + main phase) and a resumed run give the same losses; MACs on 8×8 latents; no tensor leak', async () => {
    const config = parsePruneConfig(pruneConfig(teacher, 4));
    const a = startRun({ name: 'a', out: path.join(tmp, 'prune-a'), config });
    const counts: number[] = [];
    const notes: string[] = [];
    const res = await runPrune({ config, run: a.run, onProgress: () => counts.push(tf.memory().numTensors), onNote: (l) => notes.push(l) });
    a.run.close();
    expect(res.summary?.status).toBe('completed');
    expect(notes.join('\n')).toContain('latent (VAE encoder: 16 px → 8×8×4)');
    const metrics = readMetrics(path.join(tmp, 'prune-a', 'metrics.jsonl'));
    expect(metrics.map((m) => m.mainPhase)).toEqual([0, 1, 1, 1]);
    for (const m of metrics) for (const k of ['loss', 'diffusion', 'resource', 'contrastive', 'distillation', 'block', 'std', 'max']) expect(Number.isFinite(m[k])).toBe(true);
    // step 2 enters the main phase and adds the codes' two AdamW moments; flat afterwards
    expect(counts).toHaveLength(4);
    expect(counts[2]).toBe(counts[1]);
    expect(counts[3]).toBe(counts[1]);
    // MACs of one UNet call on the latents (16 px / f = 8), not on the 16-px image
    const experts = JSON.parse(fs.readFileSync(path.join(tmp, 'prune-a', 'experts.json'), 'utf8')) as { teacherTotalMacs: number };
    const onLatents = macsModel(parseUNetConfig(UNET), { latentHeight: 8, latentWidth: 8, textTokens: 6 }).totalMacs;
    expect(experts.teacherTotalMacs).toBe(onLatents);
    expect(macsModel(parseUNetConfig(UNET), { latentHeight: 16, latentWidth: 16, textTokens: 6 }).totalMacs).toBeGreaterThan(onLatents);

    // interrupted after step 2, resumed: the same losses as uninterrupted (the VAE noise is keyed per sample and step)
    const bDir = path.join(tmp, 'prune-b');
    const b1 = startRun({ name: 'b', out: bDir, config });
    const ctl = new AbortController();
    await runPrune({ config, run: b1.run, signal: ctl.signal, onProgress: (p) => p.done === 2 && ctl.abort() });
    b1.run.close();
    const b2 = startRun({ name: 'b', resume: bDir, config });
    expect(b2.checkpoint?.step).toBe(2);
    await runPrune({ config, run: b2.run, checkpoint: b2.checkpoint });
    b2.run.close();
    const lb = readMetrics(path.join(bDir, 'metrics.jsonl'));
    expect(lb.map((m) => m.step)).toEqual([1, 2, 3, 4]);
    expect(lb.map((m) => m.loss)).toEqual(metrics.map((m) => m.loss));

    // fine-tune expert 0 on its (balanced-routed) prompts for 2 steps
    const { mapping } = await runRoute({ pruneRun: path.join(tmp, 'prune-a'), mode: 'balanced' });
    const ftConfig = finetuneConfigFromArgs({ prune: path.join(tmp, 'prune-a'), expert: '0', steps: 2, batchSize: 2 } as FinetuneCommandArgs, teacher);
    const s = startRun({ name: 'ft', out: path.join(tmp, 'ft'), config: ftConfig });
    const ftCounts: number[] = [];
    const ft = await runFinetune({ config: ftConfig, pruneRun: path.join(tmp, 'prune-a'), routing: mapping, expert: 0, run: s.run, onProgress: () => ftCounts.push(tf.memory().numTensors) });
    s.run.close();
    expect(ft.summary.status).toBe('completed');
    expect(ftCounts).toEqual([ftCounts[0], ftCounts[0]]);
    for (const m of readMetrics(path.join(tmp, 'ft', 'metrics.jsonl'))) for (const k of ['loss', 'diffusion', 'distillation', 'block']) expect(Number.isFinite(m[k])).toBe(true);
    // the expert takes and returns 4-channel latents
    const unet = await loadExpert(ft.expertDir!);
    const out = tf.tidy(() => unet.forward({ sample: tf.zeros([1, 4, 8, 8]), timestep: 10, encoderHiddenStates: tf.zeros([1, 6, 8]) }).sample);
    expect(out.shape).toEqual([1, 4, 8, 8]);
    out.dispose();
    unet.dispose();
  });

  it('a latent teacher without vae_encoder/model.onnx is a ConfigError naming it', async () => {
    const bare = path.join(tmp, 'bare');
    fs.cpSync(teacher, bare, { recursive: true });
    fs.rmSync(path.join(bare, 'vae_encoder'), { recursive: true });
    await expect(loadTeacher(bare)).rejects.toThrow(ConfigError);
    await expect(loadTeacher(bare)).rejects.toThrow(/vae_encoder\/model\.onnx/);
  });
});
