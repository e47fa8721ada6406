import * as tf from '@tensorflow/tfjs-core';
import { InputError, Rng, SafetensorsReader, ShapeError, type HostTensor } from '@aptp/core';
import { unetStructure, type UNetConfig } from './config';

/**
 * Weights under their verbatim diffusers keys (`down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight`),
 * read tensor by tensor (a 3.4 GB fp32 SD 2.1 file is never held twice) and converted **once** at load to the layout
 * of the `Ops` implementation (eager: conv `[kh, kw, I, O]`, linear `[I, O]`).
 *
 * A missing or mis-shaped tensor is an error naming the file, the tensor, the expected and the found shape. Dims given
 * as `null` are free (the pruned dims of an expert: ResNet inner channels, kept heads, kept feed-forward units); the
 * block then reads its width from the actual shape and checks the other tensors against it.
 */

/** Where weights come from: a safetensors file, or host arrays in memory (e.g. slices for shared-weight experts). */
export interface WeightSource {
  /** Label used in error messages (the file path). */
  readonly file: string;
  keys(): string[];
  has(name: string): boolean;
  shape(name: string): number[];
  /** Reads one tensor, row-major in the diffusers layout, float32. */
  read(name: string): HostTensor;
}

/** A safetensors file as a {@link WeightSource} (fp32/fp16/bf16, read tensor by tensor). Call `close()` after use. */
export function safetensorsSource(file: string): WeightSource & { close(): void } {
  const reader = new SafetensorsReader(file);
  return {
    file,
    keys: () => reader.keys(),
    has: (n) => reader.has(n),
    shape: (n) => [...reader.info(n).shape],
    read: (n) => reader.read(n),
    close: () => reader.close(),
  };
}

/** In-memory host tensors (diffusers layout) as a {@link WeightSource}. */
export function hostSource(tensors: ReadonlyMap<string, HostTensor>, label = '<memory>'): WeightSource {
  return {
    file: label,
    keys: () => [...tensors.keys()],
    has: (n) => tensors.has(n),
    shape: (n) => [...tensors.get(n)!.shape],
    read: (n) => {
      const t = tensors.get(n);
      if (!t) throw new InputError('tensor not found', { code: 'E_TENSOR_MISSING', file: label, field: n });
      return t;
    },
  };
}

/** Converts diffusers host arrays into the tensors an `Ops` implementation consumes. */
export interface TensorFactory<T> {
  /** Conv weight `[O, I, kh, kw]` stored under `key`. */
  conv(w: HostTensor, key: string): T;
  /** Linear weight `[O, I]`. */
  linear(w: HostTensor, key: string): T;
  /** Vectors (biases, norm weights `[C]`; learned rows `[1, C]`). */
  vector(v: HostTensor, key: string): T;
}

function f32(t: HostTensor): Float32Array {
  return t.data instanceof Float32Array ? t.data : Float32Array.from(t.data as ArrayLike<number>);
}

/** Eager tfjs factory: conv → `[kh, kw, I, O]`, linear → `[I, O]`, transposed on the host (no extra tensors). */
export const eagerTensorFactory: TensorFactory<tf.Tensor> = {
  conv(w) {
    const [o, i, kh, kw] = w.shape as [number, number, number, number];
    const src = f32(w);
    const out = new Float32Array(src.length);
    for (let a = 0; a < o; a++)
      for (let b = 0; b < i; b++)
        for (let y = 0; y < kh; y++)
          for (let x = 0; x < kw; x++) out[((y * kw + x) * i + b) * o + a] = src[((a * i + b) * kh + y) * kw + x]!;
    return tf.tensor4d(out, [kh, kw, i, o]);
  },
  linear(w) {
    const [o, i] = w.shape as [number, number];
    const src = f32(w);
    const out = new Float32Array(src.length);
    for (let a = 0; a < o; a++) for (let b = 0; b < i; b++) out[b * o + a] = src[a * i + b]!;
    return tf.tensor2d(out, [i, o]);
  },
  vector(v) {
    return tf.tensor(f32(v), [...v.shape]); // [C], or a [1, C] row
  },
};

/** Expected shape; `null` = free dim (read from the file). */
export type ShapeSpec = ReadonlyArray<number | null>;

export interface LoadedParam<T> {
  weight: T;
  bias: T | null;
  /** Actual diffusers shape of the weight. */
  shape: number[];
}

/** Book-keeping shared by every scope of one model: created tensors and consumed keys. */
export class ParamStore<T> {
  readonly created: T[] = [];
  readonly used = new Set<string>();
  constructor(
    readonly source: WeightSource,
    readonly factory: TensorFactory<T>,
  ) {}

  /** Keys of the source that no module consumed. */
  unused(): string[] {
    return this.source.keys().filter((k) => !this.used.has(k));
  }
}

/** A view of the weights under a module prefix (`down_blocks.0.resnets.1`). */
export class ParamScope<T> {
  constructor(
    private readonly store: ParamStore<T>,
    readonly prefix = '',
  ) {}

  get file(): string {
    return this.store.source.file;
  }

  key(name: string): string {
    return this.prefix ? `${this.prefix}.${name}` : name;
  }

  child(name: string): ParamScope<T> {
    return new ParamScope(this.store, this.key(name));
  }

  /** True if the source holds the exact key `<prefix>.<name>`. */
  has(name: string): boolean {
    return this.store.source.has(this.key(name));
  }

  /** True if any key lives under `<prefix>.<name>.` (a module is present). */
  hasModule(name = ''): boolean {
    const p = name ? `${this.key(name)}.` : `${this.prefix}.`;
    return this.store.source.keys().some((k) => k.startsWith(p));
  }

  /** Shape of `<prefix>.<name>`, checked against `expected`; throws naming the tensor when missing or wrong. */
  shape(name: string, expected: ShapeSpec): number[] {
    const key = this.key(name);
    const src = this.store.source;
    if (!src.has(key)) {
      throw new InputError('missing weight', { code: 'E_TENSOR_MISSING', file: src.file, field: key, expected: showSpec(expected) });
    }
    const found = src.shape(key);
    const ok = found.length === expected.length && expected.every((e, i) => e === null || e === found[i]);
    if (!ok) throw new ShapeError('wrong shape', { code: 'E_SHAPE', file: src.file, field: key, expected: showSpec(expected), found: `[${found.join(',')}]` });
    return found;
  }

  private load(name: string, expected: ShapeSpec, make: (t: HostTensor, key: string) => T): T {
    this.shape(name, expected);
    const key = this.key(name);
    const t = make(this.store.source.read(key), key);
    this.store.used.add(key);
    this.store.created.push(t);
    return t;
  }

  /** Conv2d `<name>.weight [O, I, kh, kw]` + `<name>.bias [O]`. */
  conv(name: string, expected: ShapeSpec): LoadedParam<T> {
    const shape = this.shape(`${name}.weight`, expected);
    const weight = this.load(`${name}.weight`, expected, (t, k) => this.store.factory.conv(t, k));
    const bias = this.load(`${name}.bias`, [shape[0]!], (t, k) => this.store.factory.vector(t, k));
    return { weight, bias, shape };
  }

  /** Linear `<name>.weight [O, I]` (+ `<name>.bias [O]` when `withBias`). */
  linear(name: string, expected: ShapeSpec, withBias = true): LoadedParam<T> {
    const shape = this.shape(`${name}.weight`, expected);
    const weight = this.load(`${name}.weight`, expected, (t, k) => this.store.factory.linear(t, k));
    const bias = withBias ? this.load(`${name}.bias`, [shape[0]!], (t, k) => this.store.factory.vector(t, k)) : null;
    return { weight, bias, shape };
  }

  /**
   * A linear layer split by output rows into `parts` equal row blocks (e.g. GEGLU's `ff.net.0.proj` into its value
   * and gate halves), so the forward never slices activations.
   */
  linearSplit(name: string, expected: ShapeSpec, parts: number): LoadedParam<T>[] {
    const shape = this.shape(`${name}.weight`, expected);
    const [o, i] = shape as [number, number];
    if (o % parts !== 0) {
      throw new ShapeError(`output rows not divisible into ${parts} parts`, { code: 'E_SHAPE', file: this.file, field: this.key(`${name}.weight`), found: `[${shape.join(',')}]` });
    }
    const rows = o / parts;
    const w = this.store.source.read(this.key(`${name}.weight`));
    const b = this.store.source.read(this.key(`${name}.bias`));
    this.shape(`${name}.bias`, [o]);
    const out: LoadedParam<T>[] = [];
    for (let p = 0; p < parts; p++) {
      const ws: HostTensor = { dtype: 'float32', shape: [rows, i], data: f32(w).subarray(p * rows * i, (p + 1) * rows * i) };
      const bs: HostTensor = { dtype: 'float32', shape: [rows], data: f32(b).subarray(p * rows, (p + 1) * rows) };
      const weight = this.store.factory.linear(ws, `${this.key(`${name}.weight`)}#${p}`);
      const bias = this.store.factory.vector(bs, `${this.key(`${name}.bias`)}#${p}`);
      this.store.created.push(weight, bias);
      out.push({ weight, bias, shape: [rows, i] });
    }
    this.store.used.add(this.key(`${name}.weight`));
    this.store.used.add(this.key(`${name}.bias`));
    return out;
  }

  /** A learned `[1, C]` row (e.g. `pool.positional_embedding`), added to `[B, C]` vectors. */
  row(name: string, channels: number): T {
    return this.load(name, [1, channels], (t, k) => this.store.factory.vector(t, k));
  }

  /** GroupNorm / LayerNorm `<name>.weight [C]`, `<name>.bias [C]`. */
  norm(name: string, channels: number | null): { weight: T; bias: T; channels: number } {
    const shape = this.shape(`${name}.weight`, [channels]);
    const weight = this.load(`${name}.weight`, [shape[0]!], (t, k) => this.store.factory.vector(t, k));
    const bias = this.load(`${name}.bias`, [shape[0]!], (t, k) => this.store.factory.vector(t, k));
    return { weight, bias, channels: shape[0]! };
  }
}

function showSpec(s: ShapeSpec): string {
  return `[${s.map((d) => (d === null ? '*' : String(d))).join(',')}]`;
}

/**
 * Random weights for a config, under the diffusers keys and shapes (the golden fixtures' initialisation: norm weights
 * 1 + N(0, 0.2²), norm biases N(0, 0.1²), every other weight and bias N(0, std²)). For tests and benchmarks.
 */
export function randomUNetWeights(cfg: UNetConfig, seed: number, std = 0.1): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  const add = (key: string, shape: number[], kind: 'w' | 'normW' | 'normB' = 'w') => {
    const n = shape.reduce((a, b) => a * b, 1);
    const rng = Rng.forKey(seed, key);
    const data = kind === 'normW' ? rng.normal(n, 1, 0.2) : rng.normal(n, 0, kind === 'normB' ? 0.1 : std);
    out.set(key, { dtype: 'float32', shape, data });
  };
  const lin = (k: string, o: number, i: number, bias = true) => (add(`${k}.weight`, [o, i]), bias && add(`${k}.bias`, [o]));
  const conv = (k: string, o: number, i: number, kk: number) => (add(`${k}.weight`, [o, i, kk, kk]), add(`${k}.bias`, [o]));
  const norm = (k: string, c: number) => (add(`${k}.weight`, [c], 'normW'), add(`${k}.bias`, [c], 'normB'));
  const s = unetStructure(cfg);
  const c0 = cfg.blockOutChannels[0]!;
  const t = cfg.timeEmbedDim;
  lin('time_embedding.linear_1', t, c0);
  lin('time_embedding.linear_2', t, t);
  if (cfg.additionEmbedType === 'text') {
    const d = cfg.crossAttentionDim;
    norm('add_embedding.norm1', d);
    add('add_embedding.pool.positional_embedding', [1, d]);
    for (const k of ['q_proj', 'k_proj', 'v_proj']) lin(`add_embedding.pool.${k}`, d, d);
    lin('add_embedding.proj', t, d);
    norm('add_embedding.norm2', t);
  }
  conv('conv_in', c0, cfg.inChannels, cfg.convInKernel);
  for (const b of s.blocks) {
    for (const r of b.resnets) {
      norm(`${r.name}.norm1`, r.inChannels);
      conv(`${r.name}.conv1`, r.outChannels, r.inChannels, 3);
      lin(`${r.name}.time_emb_proj`, r.timeScaleShift ? 2 * r.outChannels : r.outChannels, t);
      norm(`${r.name}.norm2`, r.outChannels);
      conv(`${r.name}.conv2`, r.outChannels, r.outChannels, 3);
      if (r.inChannels !== r.outChannels) conv(`${r.name}.conv_shortcut`, r.outChannels, r.inChannels, 1);
    }
    for (const a of b.attentions) {
      const c = a.channels;
      norm(`${a.name}.norm`, c);
      const proj = (k: string) => (cfg.useLinearProjection ? lin(k, c, c) : conv(k, c, c, 1));
      proj(`${a.name}.proj_in`);
      for (let j = 0; j < a.layers; j++) {
        const tb = `${a.name}.transformer_blocks.${j}`;
        for (const nn of ['norm1', 'norm2', 'norm3']) norm(`${tb}.${nn}`, c);
        for (const [attn, ctx] of [['attn1', c], ['attn2', cfg.crossAttentionDim]] as const) {
          lin(`${tb}.${attn}.to_q`, c, c, false);
          lin(`${tb}.${attn}.to_k`, c, ctx, false);
          lin(`${tb}.${attn}.to_v`, c, ctx, false);
          lin(`${tb}.${attn}.to_out.0`, c, c);
        }
        lin(`${tb}.ff.net.0.proj`, 8 * c, c);
        lin(`${tb}.ff.net.2`, c, 4 * c);
      }
      proj(`${a.name}.proj_out`);
    }
    if (b.resample) conv(`${b.name}.${b.kind === 'down' ? 'downsamplers' : 'upsamplers'}.0.conv`, b.outChannels, b.outChannels, 3);
  }
  norm('conv_norm_out', c0);
  conv('conv_out', cfg.outChannels, c0, cfg.convOutKernel);
  return out;
}
