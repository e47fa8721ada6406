import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { EagerOps, InputError, ShapeError, type Ops } from '@aptp/core';
import { readUNetConfig, unetStructure, type UNetConfig, type UNetStructure, type BlockSpec } from './config';
import { ParamScope, ParamStore, eagerTensorFactory, safetensorsSource, type TensorFactory, type WeightSource, type LoadedParam } from './weights';
import type { CaptureFn, ForwardContext, LoadContext } from './blocks/context';
import { TimestepEmbedding } from './blocks/embeddings';
import { TextTimeEmbedding } from './blocks/textTimeEmbedding';
import { CrossAttnDownBlock2D, DownBlock2D, type DownBlock } from './blocks/downBlock';
import { UNetMidBlock2DCrossAttn } from './blocks/midBlock';
import { CrossAttnUpBlock2D, UpBlock2D, type UpBlock } from './blocks/upBlock';
import type { BlockGates, GatePlacement } from './gates/apply';
import { aptpLayout, type ArchitectureLayout } from './gates/layout';
import { splitArchVector } from './gates/vector';

/**
 * `UNet2DConditionModel` (diffusers `unet_2d_condition.py`), read as the architecture: time embedding → `conv_in` →
 * down blocks push skips → mid block → up blocks pop them → `conv_norm_out` → silu → `conv_out`. Public tensors are
 * diffusers NCHW; the internal layout belongs to the `Ops` implementation (NHWC for eager). Optional APTP gates
 * (`[B, L]` architecture vectors, APTP.md §3) are split by the layout of `gates/layout.ts` and applied in the blocks.
 */

export const UNET_FILES = { config: 'config.json', weights: 'diffusion_pytorch_model.safetensors' } as const;

/** The nine top-level block outputs used by block distillation (APTP.md §5): down 0–3, mid, up 0–3. */
export type BlockOutputs<T> = Record<string, T>;

export interface UNetForwardInput<T> {
  /** Noisy latents `[B, C_in, H, W]` (NCHW). */
  sample: T;
  /** Timesteps `[B]` (or `[1]` / a number, broadcast to the batch). */
  timestep: T | number;
  /** Text states `[B, S, cross_attention_dim]`. */
  encoderHiddenStates: T;
  /**
   * APTP architecture vectors `[Bg, L]` (soft or hard gate values). Row b gates batch item b; when the batch is a
   * multiple k·Bg (classifier-free guidance: k = 2), the rows are tiled k times. Absent: the plain UNet.
   */
  gates?: T;
  /** ResNet gate placement (default `reference`). */
  placement?: GatePlacement;
  /** Receives intermediates under their diffusers module names (internal layout; see `CaptureKind`). */
  capture?: CaptureFn<T>;
  /**
   * Return the nine block outputs in `blocks` (default true; block distillation, APTP.md §5). False when only the
   * prediction is wanted (sampling, the teacher's loss): `blocks` is then empty and no NCHW copies are made.
   */
  blockOutputs?: boolean;
}

export interface UNetForwardOutput<T> {
  /** Prediction `[B, C_out, H, W]` (NCHW). */
  sample: T;
  /** `down0…downN-1`, `mid`, `up0…upN-1`, each NCHW; empty with `blockOutputs: false`. */
  blocks: BlockOutputs<T>;
}

export interface UNetLoadOptions {
  /**
   * Load a physically pruned expert (golden/aptp README §9): ResNet inner widths, head counts and feed-forward units
   * are read from the weights, and ResNets/transformers without weights are identities. Default false: every weight
   * must be present with the full shapes of the config.
   */
  pruned?: boolean;
}

type DownBuilder = <T>(p: ParamScope<T>, spec: BlockSpec, lc: LoadContext) => DownBlock<T>;
type UpBuilder = <T>(p: ParamScope<T>, spec: BlockSpec, lc: LoadContext) => UpBlock<T>;

/** The only dispatch: block-type string → builder. */
const DOWN_BLOCKS: Record<string, DownBuilder> = {
  CrossAttnDownBlock2D: (p, s, lc) => CrossAttnDownBlock2D.load(p, s, lc),
  DownBlock2D: (p, s, lc) => DownBlock2D.load(p, s, lc),
};
const UP_BLOCKS: Record<string, UpBuilder> = {
  CrossAttnUpBlock2D: (p, s, lc) => CrossAttnUpBlock2D.load(p, s, lc),
  UpBlock2D: (p, s, lc) => UpBlock2D.load(p, s, lc),
};

export class UNet2DConditionModel<T> {
  private disposed = false;
  private cachedLayout: ArchitectureLayout | null = null;

  private constructor(
    readonly config: UNetConfig,
    readonly structure: UNetStructure,
    readonly ops: Ops<T>,
    readonly pruned: boolean,
    readonly timeEmbedding: TimestepEmbedding<T>,
    /** `add_embedding` (`addition_embed_type: "text"`), or null. */
    readonly addEmbedding: TextTimeEmbedding<T> | null,
    readonly convIn: LoadedParam<T>,
    readonly downBlocks: DownBlock<T>[],
    readonly midBlock: UNetMidBlock2DCrossAttn<T>,
    readonly upBlocks: UpBlock<T>[],
    readonly convNormOut: { weight: T; bias: T },
    readonly convOut: LoadedParam<T>,
    private readonly tensors: T[],
    private readonly release: (ts: T[]) => void,
  ) {}

  /**
   * Builds the model from a weight source. Every key of the source must be consumed (an unexpected tensor means
   * the config does not describe the file).
   */
  static create<T>(
    config: UNetConfig,
    source: WeightSource,
    ops: Ops<T>,
    factory: TensorFactory<T>,
    release: (ts: T[]) => void,
    options: UNetLoadOptions = {},
  ): UNet2DConditionModel<T> {
    const store = new ParamStore(source, factory);
    const p = new ParamScope(store);
    const structure = unetStructure(config);
    const layoutCfgFfWidth = aptpLayout(config).widthGates.find((g) => g.kind === 'ffGroups')?.width ?? config.ffGateWidth;
    const lc: LoadContext = { cfg: config, pruned: options.pruned ?? false, ffGateWidth: layoutCfgFfWidth };
    try {
      const c0 = config.blockOutChannels[0]!;
      const timeEmbedding = TimestepEmbedding.load(p.child('time_embedding'), config);
      const addEmbedding = config.additionEmbedType === 'text' ? TextTimeEmbedding.load(p.child('add_embedding'), config) : null;
      const convIn = p.conv('conv_in', [c0, config.inChannels, config.convInKernel, config.convInKernel]);
      const downBlocks = structure.down.map((s) => DOWN_BLOCKS[s.type]!(p.child(s.name), s, lc));
      const midBlock = UNetMidBlock2DCrossAttn.load(p.child('mid_block'), structure.mid, lc);
      const upBlocks = structure.up.map((s) => UP_BLOCKS[s.type]!(p.child(s.name), s, lc));
      const convNormOut = p.norm('conv_norm_out', c0);
      const convOut = p.conv('conv_out', [config.outChannels, c0, config.convOutKernel, config.convOutKernel]);
      const unused = store.unused();
      if (unused.length > 0) {
        throw new InputError('unexpected weights (the config does not describe this file)', {
          code: 'E_TENSOR_UNEXPECTED',
          file: source.file,
          field: unused.slice(0, 5).join(', ') + (unused.length > 5 ? `, … (${unused.length} in all)` : ''),
        });
      }
      return new UNet2DConditionModel(config, structure, ops, lc.pruned, timeEmbedding, addEmbedding, convIn, downBlocks, midBlock, upBlocks, convNormOut, convOut, store.created, release);
    } catch (err) {
      release(store.created);
      throw err;
    }
  }

  /** The APTP architecture-vector layout of this model (its own gating, or APTP's gating of a plain config). */
  get layout(): ArchitectureLayout {
    this.cachedLayout ??= aptpLayout(this.config);
    return this.cachedLayout;
  }

  /** Splits (and for CFG tiles) `[Bg, L]` gates into per-sub-block gates. Eager tfjs only. */
  private splitGates(gates: T, batch: number): Record<string, BlockGates<T>> {
    const o = this.ops;
    const g = gates as unknown as tf.Tensor;
    const gb = o.batchSize(gates);
    if (g.rank !== 2 || batch % gb !== 0) {
      throw new ShapeError('gates must be [B, L] with B dividing the sample batch', { code: 'E_SHAPE', field: 'gates', expected: `[${batch} or a divisor, ${this.layout.vectorLength}]`, found: g.shape });
    }
    const tiled = batch === gb ? g : (o.repeatBatch(gates, batch / gb) as unknown as tf.Tensor);
    return splitArchVector(this.layout, tiled as tf.Tensor2D) as unknown as Record<string, BlockGates<T>>;
  }

  forward(input: UNetForwardInput<T>): UNetForwardOutput<T> {
    if (this.disposed) throw new InputError('the UNet has been disposed', { code: 'E_DISPOSED' });
    const o = this.ops;
    return o.scope(() => {
      const x0 = o.fromNCHW(input.sample);
      const { batch } = o.featureSize(x0);
      const gates = input.gates !== undefined ? this.splitGates(input.gates, batch) : undefined;
      const timesteps = this.timesteps(input.timestep, batch);
      const capture = input.capture;
      // 1. time embedding
      const tProj = this.timeEmbedding.project(o, timesteps);
      capture?.('t_proj', tProj, 'vector');
      let temb = this.timeEmbedding.forward(o, tProj);
      if (this.addEmbedding) {
        // diffusers: emb = time_embedding(t) + add_embedding(encoder_hidden_states)
        const aug = this.addEmbedding.forward(o, input.encoderHiddenStates);
        capture?.('add_embedding', aug, 'vector');
        temb = o.add(temb, aug);
      }
      capture?.('temb', temb, 'vector');
      const ctx: ForwardContext<T> = { o, tembAct: o.silu(temb), context: input.encoderHiddenStates, gates, placement: input.placement ?? 'reference', capture };
      // 2. conv_in: the first skip
      const kIn = (this.convIn.shape[2]! - 1) / 2;
      let h = o.conv2d(x0, this.convIn.weight, this.convIn.bias, { padding: kIn });
      capture?.('conv_in', h, 'map');
      const skips: T[] = [h];
      const blocks: BlockOutputs<T> = {};
      // 3. down blocks push skips
      this.downBlocks.forEach((b, i) => {
        const out = b.forward(ctx, h);
        h = out.hidden;
        skips.push(...out.resSamples);
        blocks[`down${i}`] = h;
      });
      // 4. mid block
      h = this.midBlock.forward(ctx, h);
      blocks.mid = h;
      // 5. up blocks pop them (last first)
      this.upBlocks.forEach((b, i) => {
        const n = b.spec.resnets.length;
        const own = skips.splice(skips.length - n, n);
        h = b.forward(ctx, h, own);
        blocks[`up${i}`] = h;
      });
      // 6. out
      const normed = o.groupNorm(h, this.convNormOut.weight, this.convNormOut.bias, this.config.normNumGroups, this.config.normEps);
      capture?.('conv_norm_out', normed, 'map');
      const kOut = (this.convOut.shape[2]! - 1) / 2;
      const out = o.conv2d(o.silu(normed), this.convOut.weight, this.convOut.bias, { padding: kOut });
      const result: UNetForwardOutput<T> = { sample: o.toNCHW(out), blocks: {} };
      if (input.blockOutputs ?? true) for (const [k, v] of Object.entries(blocks)) result.blocks[k] = o.toNCHW(v);
      return result;
    });
  }

  private timesteps(t: T | number, batch: number): T {
    const o = this.ops;
    if (typeof t === 'number') return tf.fill([batch], t) as unknown as T;
    const n = o.batchSize(t);
    if (n === batch) return t;
    if (n === 1) return o.repeatBatch(t, batch);
    throw new ShapeError('timestep must have one value per batch item (or one in all)', { code: 'E_SHAPE', field: 'timestep', expected: `[${batch}]`, found: `[${n}]` });
  }

  /** Frees every weight tensor. Idempotent. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.release(this.tensors);
  }
}

export interface LoadUNetOptions extends UNetLoadOptions {
  /** The eager ops to run with (default `new EagerOps()`). */
  ops?: EagerOps;
  /** Tensor factory (default `eagerTensorFactory`), e.g. to make chosen weights trainable variables. */
  factory?: TensorFactory<tf.Tensor>;
  /** Called once per loaded tensor (progress). */
  onProgress?: (p: { done: number; total: number }) => void;
}

/**
 * Loads a diffusers UNet folder (`config.json` + `diffusion_pytorch_model.safetensors`, fp32/fp16/bf16) into an eager
 * tfjs model. Weights are read tensor by tensor and converted to the NHWC layout once.
 */
export async function loadUNet(dir: string, options: LoadUNetOptions = {}): Promise<UNet2DConditionModel<tf.Tensor>> {
  const configFile = path.join(dir, UNET_FILES.config);
  const weightsFile = path.join(dir, UNET_FILES.weights);
  for (const f of [configFile, weightsFile]) {
    if (!fs.existsSync(f)) {
      throw new InputError('UNet folder is incomplete', { code: 'E_FILE_MISSING', file: f, expected: `${dir}/{${UNET_FILES.config}, ${UNET_FILES.weights}}`, found: 'missing' });
    }
  }
  const config = readUNetConfig(configFile);
  return createEagerUNet(config, safetensorsSource(weightsFile), options);
}

/** Builds an eager model from a config and any weight source (closes the source if it has `close`). */
export function createEagerUNet(config: UNetConfig, source: WeightSource & { close?(): void }, options: LoadUNetOptions = {}): UNet2DConditionModel<tf.Tensor> {
  const total = source.keys().length;
  let done = 0;
  const base = options.factory ?? eagerTensorFactory;
  const factory: TensorFactory<tf.Tensor> = options.onProgress
    ? {
        conv: (w, k) => (options.onProgress!({ done: ++done, total }), base.conv(w, k)),
        linear: (w, k) => (options.onProgress!({ done: ++done, total }), base.linear(w, k)),
        vector: (v, k) => (options.onProgress!({ done: ++done, total }), base.vector(v, k)),
      }
    : base;
  try {
    return UNet2DConditionModel.create(config, source, options.ops ?? new EagerOps(), factory, (ts) => tf.dispose(ts), options);
  } finally {
    source.close?.();
  }
}
