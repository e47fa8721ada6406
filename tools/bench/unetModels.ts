import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { Rng, readSafetensors, type HostTensor } from '@aptp/core';
import { macsModel, parseUNetConfig, randomUNetWeights, readUNetConfig, type DiffusersUNetConfigJson, type MacsModel, type UNetConfig } from '@aptp/unet-gating';

/**
 * The models of the UNet benchmark and their multiply-accumulate counts (see `unet.bench.ts`).
 */

export type ModelId = 'tiny' | 'sd';

/** SD 2.1's `unet/config.json` with the widths scaled 320→64 (head size 64 kept: heads 5,10,20,20 → 1,2,4,4). */
export function sdShapedConfig(crossDim: number): DiffusersUNetConfigJson {
  return {
    sample_size: 32,
    in_channels: 4,
    out_channels: 4,
    flip_sin_to_cos: true,
    freq_shift: 0,
    down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
    mid_block_type: 'UNetMidBlock2DCrossAttn',
    up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
    block_out_channels: [64, 128, 256, 256],
    layers_per_block: 2,
    attention_head_dim: [1, 2, 4, 4],
    cross_attention_dim: crossDim,
    norm_num_groups: 32,
    norm_eps: 1e-5,
    use_linear_projection: true,
    upcast_attention: true,
  };
}

export interface Inputs {
  sample: tf.Tensor;
  timestep: tf.Tensor;
  encoderHiddenStates: tf.Tensor;
}

export interface BenchModel {
  id: ModelId;
  label: string;
  config: UNetConfig;
  weights: Map<string, HostTensor>;
  latent: number;
  tokens: number;
  /** Host inputs (diffusers NCHW) and, for golden models, the reference output. */
  host: { sample: HostTensor; timestep: HostTensor; encoderHiddenStates: HostTensor; reference?: HostTensor };
}

export function f32(t: HostTensor): Float32Array {
  return t.data instanceof Float32Array ? t.data : Float32Array.from(t.data as ArrayLike<number | bigint>, (v) => Number(v));
}

function host(shape: number[], data: Float32Array): HostTensor {
  return { dtype: 'float32', shape, data };
}

export function tinyModel(golden: string): BenchModel {
  const dir = path.join(golden, 'unet-tiny');
  const files = ['config.json', 'diffusion_pytorch_model.safetensors', 'io.safetensors'].map((f) => path.join(dir, f));
  const missing = files.filter((f) => !fs.existsSync(f));
  if (missing.length > 0) throw new Error(`golden unet-tiny not found (set APTP_GOLDEN_DIR or --golden): missing ${missing.join(', ')}`);
  const io = readSafetensors(files[2]!, ['sample', 'timestep', 'encoder_hidden_states', 'out_sample']);
  const sample = io.get('sample')!;
  return {
    id: 'tiny',
    label: 'unet-tiny (golden)',
    config: readUNetConfig(files[0]!),
    weights: readSafetensors(files[1]!),
    latent: sample.shape[2]!,
    tokens: io.get('encoder_hidden_states')!.shape[1]!,
    host: { sample, timestep: io.get('timestep')!, encoderHiddenStates: io.get('encoder_hidden_states')!, reference: io.get('out_sample')! },
  };
}

export function sdModel(crossDim: number, batch: number): BenchModel {
  const config = parseUNetConfig(sdShapedConfig(crossDim), '<bench: SD-2.1-shaped, widths 64..256>');
  const latent = 32;
  const tokens = 77;
  const rng = (key: string) => Rng.forKey(2024, 'unet.bench', key);
  const timesteps = new Float32Array(batch).map((_, i) => (i % 2 === 0 ? 999 : 500));
  return {
    id: 'sd',
    label: `SD-2.1-shaped (64,128,256,256), ctx ${crossDim}`,
    config,
    // std 0.05 keeps the activations of the random model in a normal range (no Inf/NaN, no denormals).
    weights: randomUNetWeights(config, 0, 0.05),
    latent,
    tokens,
    host: {
      sample: host([batch, config.inChannels, latent, latent], rng('sample').normal(batch * config.inChannels * latent * latent)),
      timestep: host([batch], timesteps),
      encoderHiddenStates: host([batch, tokens, crossDim], rng('text').normal(batch * tokens * crossDim)),
    },
  };
}

/** Repeats the batch-`b0` host inputs up to `batch` items (the golden inputs have batch 2). */
export function inputsAt(m: BenchModel, batch: number): Inputs {
  const rep = (t: HostTensor): tf.Tensor => {
    const x = tf.tensor(f32(t), t.shape, 'float32');
    const b0 = t.shape[0]!;
    if (b0 === batch) return x;
    const idx = tf.tensor1d(Array.from({ length: batch }, (_, i) => i % b0), 'int32');
    const y = tf.gather(x, idx);
    tf.dispose([x, idx]);
    return y;
  };
  return { sample: rep(m.host.sample), timestep: rep(m.host.timestep), encoderHiddenStates: rep(m.host.encoderHiddenStates) };
}

// ---- MACs --------------------------------------------------------------------------------------------------------

export interface MacsCount {
  /** The reference counter's total (APTP MACs model), batch 1. */
  reference: number;
  /** The same with the cross-attention core counted over the real text tokens (what is computed), batch 1. */
  computed: number;
  /** Parameter count. */
  params: number;
}

/**
 * The MACs model counts the cross-attention core `heads·(2·N²·d + N²)` with the query length N for the keys (a quirk
 * of the reference counter); the computation has T text tokens: `heads·(2·N·T·d + N·T)`. Per transformer, from its
 * module counts: norm1 = N·c, to_q = N·c², attn1 core = N²·(2c + heads).
 */
export function macsOf(m: Pick<BenchModel, 'config' | 'latent' | 'tokens' | 'weights'>): MacsCount {
  const model: MacsModel = macsModel(m.config, { latentHeight: m.latent, latentWidth: m.latent, textTokens: m.tokens });
  let computed = model.totalMacs;
  for (const sb of model.subBlocks) {
    if (sb.kind !== 'transformer') continue;
    const mm = sb.moduleMacs;
    const nc = mm['transformer_blocks.0.norm1']!;
    const c = mm['attn1.to_q']! / nc;
    const n = nc / c;
    const proj = (p: string) => mm[`${p}.to_q`]! + mm[`${p}.to_k`]! + mm[`${p}.to_v`]! + mm[`${p}.to_out.0`]!;
    const core2 = mm['attn2.total']! - proj('attn2');
    computed -= core2 * (1 - m.tokens / n);
  }
  let params = 0;
  for (const t of m.weights.values()) params += t.shape.reduce((a, b) => a * b, 1);
  return { reference: model.totalMacs, computed, params };
}
