/**
 * Test-only helpers (not exported): tiny models in temp dirs — a random UNet folder, a CLIP BPE tokenizer, a CLIP-like
 * ONNX text encoder (token table + position table), an ONNX VAE decoder (nearest ×2 upsampling + 1×1 conv) and an ONNX
 * VAE encoder (2×2 average pooling + 1×1 conv), with JavaScript references of what the ONNX models compute.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { OnnxGraph, Rng, vocabFromMerges, writeSafetensors, type HostTensor } from '@aptp/core';
import { parseUNetConfig, type UNetConfig } from '../config';
import { randomUNetWeights } from '../weights';

const made: string[] = [];
afterAll(() => {
  for (const dir of made.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

export function tempDir(prefix = 'aptp-pipeline-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  made.push(dir);
  return dir;
}

/** A tiny diffusers UNet config (both block kinds, conv projections). */
export function tinyUNetJson(channels: number, crossAttentionDim: number): Record<string, unknown> {
  return {
    _class_name: 'UNet2DConditionModel',
    block_out_channels: [8, 16],
    down_block_types: ['CrossAttnDownBlock2D', 'DownBlock2D'],
    up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D'],
    attention_head_dim: 2,
    cross_attention_dim: crossAttentionDim,
    layers_per_block: 1,
    norm_num_groups: 4,
    in_channels: channels,
    out_channels: channels,
    sample_size: 8,
    use_linear_projection: false,
  };
}

/** Writes `dir/{config.json, diffusion_pytorch_model.safetensors}` with random weights; returns the config. */
export function writeTinyUNet(dir: string, channels: number, crossAttentionDim: number, seed = 1): UNetConfig {
  const json = tinyUNetJson(channels, crossAttentionDim);
  const cfg = parseUNetConfig(json);
  fs.mkdirSync(dir, { recursive: true });
  writeSafetensors(path.join(dir, 'diffusion_pytorch_model.safetensors'), Object.fromEntries(randomUNetWeights(cfg, seed, 0.2)) as Record<string, HostTensor>);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(json));
  return cfg;
}

/** An SD 2.1-like scheduler config (scaled-linear betas, v-prediction, leading spacing with offset 1). */
export const SD21_SCHEDULER = {
  _class_name: 'DDIMScheduler',
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  beta_start: 0.00085,
  clip_sample: false,
  num_train_timesteps: 1000,
  prediction_type: 'v_prediction',
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  trained_betas: null,
};

export function writeScheduler(modelDir: string, config: Record<string, unknown> = SD21_SCHEDULER): void {
  fs.mkdirSync(path.join(modelDir, 'scheduler'), { recursive: true });
  fs.writeFileSync(path.join(modelDir, 'scheduler', 'scheduler_config.json'), JSON.stringify(config));
}

/** BPE merges of the tiny tokenizer. */
export const MERGES: [string, string][] = [
  ['r', 'e'],
  ['re', 'd</w>'],
  ['c', 'i'],
  ['ci', 'r'],
  ['b', 'l'],
];

/** Writes `dir/{vocab.json, merges.txt, tokenizer_config.json}`; returns the vocabulary. */
export function writeTokenizer(dir: string, options: { padToken?: string; maxLength?: number } = {}): Map<string, number> {
  fs.mkdirSync(dir, { recursive: true });
  const vocab = vocabFromMerges(MERGES);
  fs.writeFileSync(path.join(dir, 'vocab.json'), JSON.stringify(Object.fromEntries(vocab)));
  fs.writeFileSync(path.join(dir, 'merges.txt'), ['#version: 0.2', ...MERGES.map(([a, b]) => `${a} ${b}`)].join('\n') + '\n');
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ pad_token: options.padToken ?? '!', model_max_length: options.maxLength ?? 8 }));
  return vocab;
}

export interface TinyTextEncoder {
  /** `[V, D]` token table and `[S, D]` position table. */
  table: Float32Array;
  positions: Float32Array;
  vocabSize: number;
  dim: number;
  seqLen: number;
}

/** `last_hidden_state[b, s] = table[ids[b, s]] + positions[s]` as an ONNX model (`input_ids` int64 or int32). */
export function writeTextEncoder(file: string, vocabSize: number, dim: number, seqLen: number, idsType: 'int64' | 'int32' = 'int64', seed = 5): TinyTextEncoder {
  const rng = Rng.forKey(seed, 'text-encoder');
  const table = rng.normal(vocabSize * dim);
  const positions = rng.normal(seqLen * dim, 0, 0.1);
  const g = new OnnxGraph('text_encoder', { opset: 17 });
  g.input('input_ids', idsType, ['batch', seqLen]);
  const t = g.initializer('token_embedding', { data: table, dims: [vocabSize, dim] });
  const p = g.initializer('position_embedding', { data: positions, dims: [seqLen, dim] });
  const emb = g.op('Gather', [t, 'input_ids'], { axis: 0 });
  g.op('Add', [emb, p], {}, { output: 'last_hidden_state' });
  g.output('last_hidden_state', 'float32', ['batch', seqLen, dim]);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, g.toBytes());
  return { table, positions, vocabSize, dim, seqLen };
}

/** Reference of `writeTextEncoder`'s model for token ids `[B, S]`. */
export function textEncoderReference(enc: TinyTextEncoder, ids: Int32Array): Float32Array {
  const { dim: D, seqLen: S } = enc;
  const out = new Float32Array(ids.length * D);
  for (let i = 0; i < ids.length; i++) {
    const s = i % S;
    for (let d = 0; d < D; d++) out[i * D + d] = Math.fround(enc.table[ids[i]! * D + d]! + enc.positions[s * D + d]!);
  }
  return out;
}

export interface TinyVae {
  /** 1×1 conv `[3, C]` and bias `[3]`. */
  weight: Float32Array;
  bias: Float32Array;
  latentChannels: number;
  scalingFactor: number;
}

/**
 * `vae_decoder/{model.onnx, config.json}`: `sample = conv1x1(upsample_nearest_x2(latent_sample))`; the config has
 * `block_out_channels` of length 2 (scale factor 2) and the given scaling factor.
 */
export function writeVaeDecoder(dir: string, latentChannels = 4, scalingFactor = 0.5, seed = 9): TinyVae {
  const rng = Rng.forKey(seed, 'vae');
  const weight = rng.normal(3 * latentChannels, 0, 0.5);
  const bias = rng.normal(3, 0, 0.1);
  const g = new OnnxGraph('vae_decoder', { opset: 17 });
  g.input('latent_sample', 'float32', ['batch', latentChannels, 'h', 'w']);
  const scales = g.constant({ data: new Float32Array([1, 1, 2, 2]), dims: [4] }, 'scales');
  const up = g.op('Resize', ['latent_sample', '', scales], { mode: 'nearest', nearest_mode: 'floor', coordinate_transformation_mode: 'asymmetric' });
  const w = g.initializer('conv.weight', { data: weight, dims: [3, latentChannels, 1, 1] });
  const b = g.initializer('conv.bias', { data: bias, dims: [3] });
  g.op('Conv', [up, w, b], { kernel_shape: [1, 1] }, { output: 'sample' });
  g.output('sample', 'float32', ['batch', 3, 'H', 'W']);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'model.onnx'), g.toBytes());
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ _class_name: 'AutoencoderKL', scaling_factor: scalingFactor, latent_channels: latentChannels, block_out_channels: [4, 8] }));
  return { weight, bias, latentChannels, scalingFactor };
}

/** Reference of `writeVaeDecoder`'s model (with the 1/scaling_factor the decoder applies first), float64. */
export function vaeReference(vae: TinyVae, latents: Float32Array, dims: readonly number[]): Float64Array {
  const [B, C, h, w] = dims as [number, number, number, number];
  const H = 2 * h;
  const W = 2 * w;
  const out = new Float64Array(B * 3 * H * W);
  for (let b = 0; b < B; b++)
    for (let o = 0; o < 3; o++)
      for (let y = 0; y < H; y++)
        for (let x = 0; x < W; x++) {
          let acc = vae.bias[o]!;
          for (let c = 0; c < C; c++) acc += vae.weight[o * C + c]! * (Math.fround(latents[((b * C + c) * h + (y >> 1)) * w + (x >> 1)]! / vae.scalingFactor));
          out[((b * 3 + o) * H + y) * W + x] = acc;
        }
  return out;
}

/** Writes a whole SD-style folder: unet/ (latent, 4 channels), scheduler/, tokenizer/, text_encoder/, vae_decoder/. */
export function writeSdStyleModel(dir: string, options: { dim?: number; seqLen?: number; idsType?: 'int64' | 'int32' } = {}): { enc: TinyTextEncoder; vae: TinyVae; vocab: Map<string, number>; unet: UNetConfig } {
  const dim = options.dim ?? 6;
  const seqLen = options.seqLen ?? 8;
  const unet = writeTinyUNet(path.join(dir, 'unet'), 4, dim);
  writeScheduler(dir);
  const vocab = writeTokenizer(path.join(dir, 'tokenizer'), { maxLength: seqLen });
  const enc = writeTextEncoder(path.join(dir, 'text_encoder', 'model.onnx'), vocab.size, dim, seqLen, options.idsType);
  const vae = writeVaeDecoder(path.join(dir, 'vae_decoder'));
  return { enc, vae, vocab, unet };
}

/** Which outputs `writeVaeEncoder`'s graph has (the layouts `OrtVaeEncoder` accepts). */
export type TinyVaeEncoderLayout = 'latent_parameters' | 'mean_logvar' | 'latent_sample';

export interface TinyVaeEncoder {
  /** 1×1 conv `[O, 3]` and bias `[O]` (O = 2C: mean rows then logvar rows; C for `latent_sample`). */
  weight: Float32Array;
  bias: Float32Array;
  latentChannels: number;
  scalingFactor: number;
  shiftFactor: number | null;
  layout: TinyVaeEncoderLayout;
}

/**
 * `vae_encoder/{model.onnx, config.json}`: `out = conv1x1(avgpool2x2(sample))` with outputs by `layout`; the config has
 * `block_out_channels` of length 2 (scale factor 2). Logvar channel 0 has bias +26 and channel 1 bias −36, so that
 * diffusers' clamp to [−30, 20] matters; other channels have small biases.
 */
export function writeVaeEncoder(
  dir: string,
  options: { latentChannels?: number; scalingFactor?: number; shiftFactor?: number | null; layout?: TinyVaeEncoderLayout; seed?: number } = {},
): TinyVaeEncoder {
  const C = options.latentChannels ?? 4;
  const layout = options.layout ?? 'latent_parameters';
  const O = layout === 'latent_sample' ? C : 2 * C;
  const rng = Rng.forKey(options.seed ?? 11, 'vae-encoder');
  const weight = rng.normal(O * 3, 0, 0.5);
  const bias = rng.normal(O, 0, 0.1);
  if (layout !== 'latent_sample') {
    bias[C] = 26;
    if (C > 1) bias[C + 1] = -36;
  }
  const g = new OnnxGraph('vae_encoder', { opset: 17 });
  g.input('sample', 'float32', ['batch', 3, 'H', 'W']);
  const pooled = g.op('AveragePool', ['sample'], { kernel_shape: [2, 2], strides: [2, 2] });
  const conv = (name: string, rows: number, from: number, output: string): void => {
    const w = g.initializer(`${name}.weight`, { data: weight.slice(from * 3, (from + rows) * 3), dims: [rows, 3, 1, 1] });
    const b = g.initializer(`${name}.bias`, { data: bias.slice(from, from + rows), dims: [rows] });
    g.op('Conv', [pooled, w, b], { kernel_shape: [1, 1] }, { output });
    g.output(output, 'float32', ['batch', rows, 'h', 'w']);
  };
  if (layout === 'mean_logvar') {
    conv('mean', C, 0, 'mean');
    conv('logvar', C, C, 'logvar');
  } else {
    conv('quant_conv', O, 0, layout);
  }
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'model.onnx'), g.toBytes());
  const scalingFactor = options.scalingFactor ?? 0.5;
  const shiftFactor = options.shiftFactor ?? null;
  fs.writeFileSync(
    path.join(dir, 'config.json'),
    JSON.stringify({ _class_name: 'AutoencoderKL', in_channels: 3, scaling_factor: scalingFactor, ...(shiftFactor !== null ? { shift_factor: shiftFactor } : {}), latent_channels: C, block_out_channels: [4, 8] }),
  );
  return { weight, bias, latentChannels: C, scalingFactor, shiftFactor, layout };
}

/**
 * Reference of `writeVaeEncoder`'s model followed by what diffusers' training does, float64: the graph's outputs by
 * hand (2×2 mean, then the 1×1 conv), z = mean + exp(clamp(logvar, −30, 20)/2)·ε (ε: `eps[b]`, `[C·h·w]`) or z = mean
 * (`eps` null), or the graph's `latent_sample`; then x0 = (z − shift)·scaling.
 */
export function vaeEncoderReference(vae: TinyVaeEncoder, images: Float32Array, dims: readonly number[], eps: Float32Array[] | null): Float64Array {
  const [B, , H, W] = dims as [number, number, number, number];
  const h = H / 2;
  const w = W / 2;
  const C = vae.latentChannels;
  const O = vae.layout === 'latent_sample' ? C : 2 * C;
  const out = new Float64Array(B * C * h * w);
  const px = (b: number, c: number, y: number, x: number): number => images[((b * 3 + c) * H + y) * W + x]!;
  for (let b = 0; b < B; b++)
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        const pooled = [0, 1, 2].map((c) => (px(b, c, 2 * y, 2 * x) + px(b, c, 2 * y, 2 * x + 1) + px(b, c, 2 * y + 1, 2 * x) + px(b, c, 2 * y + 1, 2 * x + 1)) / 4);
        const row = (o: number): number => vae.bias[o]! + pooled.reduce((a, p, c) => a + vae.weight[o * 3 + c]! * p, 0);
        for (let c = 0; c < C; c++) {
          const k = (c * h + y) * w + x;
          let z: number;
          if (O === C) z = row(c);
          else if (eps === null) z = row(c);
          else z = row(c) + Math.exp(0.5 * Math.min(20, Math.max(-30, row(C + c)))) * eps[b]![k]!;
          out[b * C * h * w + k] = (z - (vae.shiftFactor ?? 0)) * vae.scalingFactor;
        }
      }
  return out;
}
