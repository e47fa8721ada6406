import * as tf from '@tensorflow/tfjs-core';
import { InputError, Rng, ShapeError, type HostTensor } from '@aptp/core';
import {
  createEagerUNet,
  eagerTensorFactory,
  hostSource,
  randomUNetWeights,
  type TensorFactory,
  type UNet2DConditionModel,
  type UNetConfig,
} from '@aptp/unet-gating';

/**
 * A UNet whose weights are trainable `tf.Variable`s, with the way back to the diffusers layout.
 *
 * The eager model holds weights in its own layout (conv `[kh, kw, I, O]`, linear `[I, O]`, and GEGLU's
 * `ff.net.0.proj` split into two row blocks keyed `<key>#0`, `<key>#1`). Each variable keeps that layout and key, so
 * the optimizer and checkpoints see exactly what the forward uses; {@link TrainableUNet.diffusersWeights} transposes
 * back and re-joins the GEGLU halves, giving the `diffusion_pytorch_model.safetensors` tensors of the same model.
 */
type Kind = 'conv' | 'linear' | 'vector';

export interface TrainableUNet {
  unet: UNet2DConditionModel<tf.Tensor>;
  /** Variables by eager key (`down_blocks.0.resnets.0.conv1.weight`, `…ff.net.0.proj.weight#1`). */
  params: Record<string, tf.Variable>;
  /** Host copies in the diffusers layout and keys (what `loadUNet` reads). */
  diffusersWeights(from?: Record<string, tf.Tensor>): Map<string, HostTensor>;
  dispose(): void;
}

function toDiffusers(t: tf.Tensor, kind: Kind): HostTensor {
  const src = t.dataSync() as Float32Array;
  if (kind === 'vector') return { dtype: 'float32', shape: [...t.shape], data: Float32Array.from(src) };
  if (kind === 'linear') {
    const [i, o] = t.shape as [number, number];
    const out = new Float32Array(src.length);
    for (let a = 0; a < o; a++) for (let b = 0; b < i; b++) out[a * i + b] = src[b * o + a]!;
    return { dtype: 'float32', shape: [o, i], data: out };
  }
  const [kh, kw, i, o] = t.shape as [number, number, number, number];
  const out = new Float32Array(src.length);
  for (let a = 0; a < o; a++)
    for (let b = 0; b < i; b++)
      for (let y = 0; y < kh; y++) for (let x = 0; x < kw; x++) out[((a * i + b) * kh + y) * kw + x] = src[((y * kw + x) * i + b) * o + a]!;
  return { dtype: 'float32', shape: [o, i, kh, kw], data: out };
}

/** Joins `<key>#0`, `<key>#1`, … (row blocks of a diffusers `[O, I]` weight or `[O]` bias) into `<key>`. */
function joinParts(parts: HostTensor[]): HostTensor {
  const rows = parts.reduce((s, p) => s + p.shape[0]!, 0);
  const data = new Float32Array(parts.reduce((s, p) => s + p.data.length, 0));
  let off = 0;
  for (const p of parts) {
    data.set(p.data as Float32Array, off);
    off += p.data.length;
  }
  return { dtype: 'float32', shape: [rows, ...parts[0]!.shape.slice(1)], data };
}

/**
 * Builds the model (or, with `pruned`, a physically pruned expert) from diffusers-layout host weights with every weight
 * a trainable variable (names are unique per call, so several models can coexist). The builder checks the weights
 * against the config (a missing, mis-shaped or extra tensor is an error naming it and `source`, the file they came from).
 */
export function createTrainableUNet(config: UNetConfig, weights: ReadonlyMap<string, HostTensor>, label = 'unet', options: { pruned?: boolean; source?: string } = {}): TrainableUNet {
  const params: Record<string, tf.Variable> = {};
  const kinds = new Map<string, Kind>();
  const uid = Math.random().toString(36).slice(2, 8);
  const wrap = (t: tf.Tensor, key: string, kind: Kind): tf.Tensor => {
    const v = tf.variable(t, true, `${label}_${uid}/${key}`);
    t.dispose();
    params[key] = v;
    kinds.set(key, kind);
    return v;
  };
  const factory: TensorFactory<tf.Tensor> = {
    conv: (w, k) => wrap(eagerTensorFactory.conv(w, k), k, 'conv'),
    linear: (w, k) => wrap(eagerTensorFactory.linear(w, k), k, 'linear'),
    vector: (v, k) => wrap(eagerTensorFactory.vector(v, k), k, 'vector'),
  };
  // `pruned`: a physically pruned expert (widths read from the weights), as `loadExpert` builds it
  const unet = createEagerUNet(config, hostSource(weights, options.source), { factory, pruned: options.pruned ?? false });
  return {
    unet,
    params,
    diffusersWeights(from = params) {
      const out = new Map<string, HostTensor>();
      const split = new Map<string, HostTensor[]>();
      for (const [key, kind] of kinds) {
        const t = from[key];
        if (!t) throw new InputError('tensor missing', { field: key });
        const host = toDiffusers(t, kind);
        const m = /^(.*)#(\d+)$/.exec(key);
        if (m) {
          const list = split.get(m[1]!) ?? [];
          list[Number(m[2])] = host;
          split.set(m[1]!, list);
        } else out.set(key, host);
      }
      for (const [key, parts] of split) out.set(key, joinParts(parts));
      return out;
    },
    dispose() {
      unet.dispose();
    },
  };
}

/**
 * Fresh weights for a config with PyTorch's default initialisation (what `UNet2DConditionModel(**config)` gets):
 * conv and linear weights and biases U(−1/√fan_in, 1/√fan_in) (kaiming-uniform with a = √5), GroupNorm/LayerNorm
 * weight 1 and bias 0, `AttentionPooling.positional_embedding` N(0, 1/D). `zeroOut` also zeroes `conv_out` (the prediction starts at 0; a common diffusion choice).
 * Deterministic per (seed, key).
 */
export function initUNetWeights(config: UNetConfig, seed: number, options: { zeroOut?: boolean } = {}): Map<string, HostTensor> {
  const shapes = randomUNetWeights(config, seed, 0); // keys and shapes of the config
  const out = new Map<string, HostTensor>();
  const isNorm = (key: string) => /(^|\.)(norm\d?|conv_norm_out)\.(weight|bias)$/.test(key);
  for (const [key, t] of shapes) {
    const n = t.data.length;
    let data: Float32Array;
    if (isNorm(key)) data = new Float32Array(n).fill(key.endsWith('.weight') ? 1 : 0);
    else if (key.endsWith('.positional_embedding')) data = Rng.forKey(seed, 'init', key).normal(n, 0, 1 / Math.sqrt(t.shape[1]!)); // torch.randn(1, D) / √D
    else if (options.zeroOut && key.startsWith('conv_out.')) data = new Float32Array(n);
    else {
      const w = key.endsWith('.bias') ? shapes.get(`${key.slice(0, -'.bias'.length)}.weight`) : t;
      if (!w) throw new ShapeError('bias without weight', { field: key });
      const fanIn = w.shape.slice(1).reduce((a, b) => a * b, 1);
      const bound = 1 / Math.sqrt(fanIn);
      const u = Rng.forKey(seed, 'init', key).uniform(n);
      data = Float32Array.from(u, (x) => (2 * x - 1) * bound);
    }
    out.set(key, { dtype: 'float32', shape: [...t.shape], data });
  }
  return out;
}
