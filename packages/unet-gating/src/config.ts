import * as fs from 'node:fs';
import { z } from 'zod';
import { ConfigError, InputError } from '@aptp/core';

/**
 * The diffusers `UNet2DConditionModel` `config.json` (snake_case, as diffusers writes it), validated with zod and
 * mapped once to the camelCase {@link UNetConfig}. `_`-prefixed keys (`_class_name`, `_diffusers_version`, ...) are
 * ignored; every other key must be known, and every value we do not implement is a `ConfigError` naming the field and
 * the value (diffusers `_check_config` style, never a silent warning).
 *
 * The APTP reference writes its gated UNet with the same keys plus `gated_ff` / `ff_gate_width` and block types with
 * a gating suffix (`CrossAttnDownBlock2DHalfGated`, `UNetMidBlock2DCrossAttnWidthGated`, ...). Those map to the plain
 * block type plus a {@link BlockGating} (APTP.md §3.1, golden/aptp/README.md §2): the weights are exactly those of
 * the plain UNet.
 */

export type DownBlockType = 'CrossAttnDownBlock2D' | 'DownBlock2D';
export type UpBlockType = 'UpBlock2D' | 'CrossAttnUpBlock2D';
export type MidBlockType = 'UNetMidBlock2DCrossAttn';

/**
 * APTP gating variant of a block (reference class-name suffix):
 * - `none`: plain diffusers block;
 * - `width`: width gates only (`WidthGated`, the reference's mid block);
 * - `widthDepth`: width gates and a depth gate on every ResNet and transformer (`Gated`);
 * - `widthHalfDepth`: width gates, depth gates on the last ResNet and last transformer only (`HalfGated`, SD 2.1).
 */
export type BlockGating = 'none' | 'width' | 'widthDepth' | 'widthHalfDepth';

const GATING_SUFFIX: ReadonlyArray<[string, BlockGating]> = [
  ['HalfGated', 'widthHalfDepth'],
  ['WidthGated', 'width'],
  ['Gated', 'widthDepth'],
];

export interface UNetConfig {
  inChannels: number;
  outChannels: number;
  /** Output sample size of the pretrained model (informative only; any H, W divisible by 2^(blocks-1) runs). */
  sampleSize: number | [number, number] | null;
  flipSinToCos: boolean;
  freqShift: number;
  downBlockTypes: DownBlockType[];
  downBlockGating: BlockGating[];
  midBlockType: MidBlockType;
  midBlockGating: BlockGating;
  upBlockTypes: UpBlockType[];
  upBlockGating: BlockGating[];
  blockOutChannels: number[];
  /** ResNets per down block (up block i has `reversed[i] + 1`). */
  layersPerBlock: number[];
  /** BasicTransformerBlocks per Transformer2DModel, per down block (up blocks reversed, mid uses the last entry). */
  transformerLayersPerBlock: number[];
  /**
   * Attention **heads** per down block. diffusers names this `attention_head_dim` (the naming trap, golden README
   * §2.2): with `num_attention_heads` null, `attention_head_dim` is the number of heads; head size = channels/heads.
   */
  attentionHeads: number[];
  crossAttentionDim: number;
  useLinearProjection: boolean;
  upcastAttention: boolean;
  normNumGroups: number;
  normEps: number;
  downsamplePadding: number;
  midBlockScaleFactor: number;
  resnetOutScaleFactor: number;
  convInKernel: number;
  convOutKernel: number;
  /** Width of the time embedding (`time_embedding_dim`, default 4·block_out_channels[0]). */
  timeEmbedDim: number;
  /**
   * How a ResNet takes the time embedding (`resnet_time_scale_shift`): `default` adds `time_emb_proj(temb)` before
   * norm2 (SD); `scale_shift` projects to 2·C and modulates after it, `norm2(h)·(1 + scale) + shift` (ADM's AdaGN).
   */
  resnetTimeScaleShift: 'default' | 'scale_shift';
  /**
   * `addition_embed_type: "text"`: a `TextTimeEmbedding` (`add_embedding`) pools the text states by attention and
   * adds the result to the time embedding, so every ResNet sees the prompt (null: none, SD 1.x/2.x).
   */
  additionEmbedType: 'text' | null;
  /** Heads of the `add_embedding` attention pooling (`addition_embed_type_num_heads`). */
  additionEmbedHeads: number;
  /** APTP: feed-forward gates present (`gated_ff`). */
  gatedFf: boolean;
  /** APTP: feed-forward gate elements per transformer (`ff_gate_width`, reference default 32). */
  ffGateWidth: number;
}

const posInt = z.number().int().positive();
const intOrList = z.union([posInt, z.array(posInt).min(1)]);

/** Keys and the values we support. Defaults are diffusers' own (UNet2DConditionModel.__init__). */
const diffusersUNetSchema = z.strictObject({
  sample_size: z.union([posInt, z.tuple([posInt, posInt]), z.null()]).default(null),
  in_channels: posInt.default(4),
  out_channels: posInt.default(4),
  center_input_sample: z.literal(false).default(false),
  flip_sin_to_cos: z.boolean().default(true),
  freq_shift: z.number().default(0),
  down_block_types: z.array(z.string()).min(1).default(['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D']),
  mid_block_type: z.string().default('UNetMidBlock2DCrossAttn'),
  up_block_types: z.array(z.string()).min(1).default(['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D']),
  only_cross_attention: z.union([z.literal(false), z.array(z.literal(false))]).default(false),
  block_out_channels: z.array(posInt).min(1).default([320, 640, 1280, 1280]),
  layers_per_block: intOrList.default(2),
  downsample_padding: z.literal(1).default(1),
  mid_block_scale_factor: z.number().positive().default(1),
  dropout: z.literal(0).default(0),
  act_fn: z.literal('silu').default('silu'),
  norm_num_groups: posInt.default(32),
  norm_eps: z.number().positive().default(1e-5),
  cross_attention_dim: posInt.default(1280),
  transformer_layers_per_block: intOrList.default(1),
  reverse_transformer_layers_per_block: z.null().default(null),
  encoder_hid_dim: z.null().default(null),
  encoder_hid_dim_type: z.null().default(null),
  attention_head_dim: intOrList.default(8),
  num_attention_heads: z.union([intOrList, z.null()]).default(null),
  dual_cross_attention: z.literal(false).default(false),
  use_linear_projection: z.boolean().default(false),
  class_embed_type: z.null().default(null),
  addition_embed_type: z.union([z.null(), z.literal('text')]).default(null),
  addition_time_embed_dim: z.null().default(null),
  addition_embed_type_num_heads: posInt.default(64),
  num_class_embeds: z.null().default(null),
  upcast_attention: z.boolean().default(false),
  resnet_time_scale_shift: z.enum(['default', 'scale_shift']).default('default'),
  resnet_skip_time_act: z.literal(false).default(false),
  resnet_out_scale_factor: z.number().positive().default(1),
  time_embedding_type: z.literal('positional').default('positional'),
  time_embedding_dim: z.union([posInt, z.null()]).default(null),
  time_embedding_act_fn: z.null().default(null),
  timestep_post_act: z.null().default(null),
  time_cond_proj_dim: z.null().default(null),
  conv_in_kernel: posInt.refine((k) => k % 2 === 1, 'an odd kernel size').default(3),
  conv_out_kernel: posInt.refine((k) => k % 2 === 1, 'an odd kernel size').default(3),
  projection_class_embeddings_input_dim: z.null().default(null),
  attention_type: z.literal('default').default('default'),
  class_embeddings_concat: z.literal(false).default(false),
  mid_block_only_cross_attention: z.union([z.null(), z.literal(false)]).default(null),
  cross_attention_norm: z.null().default(null),
  // APTP reference (UNet2DConditionModelGated) extras.
  gated_ff: z.boolean().default(false),
  ff_gate_width: posInt.default(32),
});

export type DiffusersUNetConfigJson = z.input<typeof diffusersUNetSchema>;

function valueAt(obj: unknown, path: ReadonlyArray<PropertyKey>): unknown {
  let cur: unknown = obj;
  for (const k of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[k as string];
  }
  return cur;
}

function splitGating(type: string, plain: readonly string[], file: string, field: string): [string, BlockGating] {
  if (plain.includes(type)) return [type, 'none'];
  for (const [suffix, gating] of GATING_SUFFIX) {
    if (type.endsWith(suffix) && plain.includes(type.slice(0, -suffix.length))) return [type.slice(0, -suffix.length), gating];
  }
  const choices = plain.flatMap((p) => [p, ...GATING_SUFFIX.map(([s]) => p + s)]);
  throw new ConfigError('unsupported block type', { code: 'E_CONFIG_VALUE', file, field, expected: `one of ${choices.join(', ')}`, found: type });
}

function perBlock(v: number | number[], n: number, file: string, field: string): number[] {
  if (typeof v === 'number') return new Array<number>(n).fill(v);
  if (v.length !== n) {
    throw new ConfigError('list length must equal the number of down blocks', { code: 'E_CONFIG_VALUE', file, field, expected: n, found: v });
  }
  return [...v];
}

/**
 * Validates a parsed diffusers `config.json` and maps it to {@link UNetConfig}.
 * @param json the parsed JSON object
 * @param file the file it came from (for error messages)
 */
export function parseUNetConfig(json: unknown, file = 'unet/config.json'): UNetConfig {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new ConfigError('a UNet config must be a JSON object', { code: 'E_CONFIG', file, found: Array.isArray(json) ? 'array' : typeof json });
  }
  const visible = Object.fromEntries(Object.entries(json as Record<string, unknown>).filter(([k]) => !k.startsWith('_')));
  const parsed = diffusersUNetSchema.safeParse(visible);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    if (issue.code === 'unrecognized_keys') {
      const keys = (issue as { keys: string[] }).keys;
      throw new ConfigError('unsupported config field', { code: 'E_CONFIG_FIELD', file, field: keys.join(', '), found: keys.map((k) => visible[k]) });
    }
    const field = issue.path.map(String).join('.');
    throw new ConfigError('unsupported config value', {
      code: 'E_CONFIG_VALUE',
      file,
      field,
      expected: issue.message,
      found: valueAt(visible, issue.path) === undefined ? 'undefined' : valueAt(visible, issue.path),
    });
  }
  const c = parsed.data;
  const nDown = c.down_block_types.length;
  if (c.up_block_types.length !== nDown) {
    throw new ConfigError('must have as many up blocks as down blocks', { code: 'E_CONFIG_VALUE', file, field: 'up_block_types', expected: nDown, found: c.up_block_types });
  }
  if (c.block_out_channels.length !== nDown) {
    throw new ConfigError('must have one entry per down block', { code: 'E_CONFIG_VALUE', file, field: 'block_out_channels', expected: nDown, found: c.block_out_channels });
  }
  const down = c.down_block_types.map((t, i) => splitGating(t, ['CrossAttnDownBlock2D', 'DownBlock2D'], file, `down_block_types.${i}`));
  const up = c.up_block_types.map((t, i) => splitGating(t, ['UpBlock2D', 'CrossAttnUpBlock2D'], file, `up_block_types.${i}`));
  const mid = splitGating(c.mid_block_type, ['UNetMidBlock2DCrossAttn'], file, 'mid_block_type');
  // diffusers: `num_attention_heads = num_attention_heads or attention_head_dim` (the heads trap, golden README §2.2).
  const heads = perBlock(c.num_attention_heads ?? c.attention_head_dim, nDown, file, c.num_attention_heads !== null ? 'num_attention_heads' : 'attention_head_dim');
  const channels = c.block_out_channels;
  const headsField = c.num_attention_heads !== null ? 'num_attention_heads' : 'attention_head_dim';
  const check = (ch: number, h: number, where: string) => {
    if (ch % h !== 0) throw new ConfigError(`channels ${ch} of ${where} not divisible by its number of heads`, { code: 'E_CONFIG_VALUE', file, field: headsField, expected: `a divisor of ${ch}`, found: h });
  };
  down.forEach(([t], i) => t === 'CrossAttnDownBlock2D' && check(channels[i]!, heads[i]!, `down_blocks.${i}`));
  check(channels[nDown - 1]!, heads[nDown - 1]!, 'mid_block');
  up.forEach(([t], i) => t === 'CrossAttnUpBlock2D' && check(channels[nDown - 1 - i]!, heads[nDown - 1 - i]!, `up_blocks.${i}`));
  if (c.addition_embed_type === 'text' && c.cross_attention_dim % c.addition_embed_type_num_heads !== 0) {
    throw new ConfigError('cross_attention_dim must be whole heads of the text pooling', {
      code: 'E_CONFIG_VALUE',
      file,
      field: 'addition_embed_type_num_heads',
      expected: `a divisor of cross_attention_dim ${c.cross_attention_dim}`,
      found: c.addition_embed_type_num_heads,
    });
  }
  for (const [i, ch] of channels.entries()) {
    if (ch % c.norm_num_groups !== 0) {
      throw new ConfigError(`block_out_channels[${i}] = ${ch} not divisible by norm_num_groups`, { code: 'E_CONFIG_VALUE', file, field: 'norm_num_groups', expected: `a divisor of ${ch}`, found: c.norm_num_groups });
    }
  }
  return {
    inChannels: c.in_channels,
    outChannels: c.out_channels,
    sampleSize: c.sample_size,
    flipSinToCos: c.flip_sin_to_cos,
    freqShift: c.freq_shift,
    downBlockTypes: down.map(([t]) => t as DownBlockType),
    downBlockGating: down.map(([, g]) => g),
    midBlockType: mid[0] as MidBlockType,
    midBlockGating: mid[1],
    upBlockTypes: up.map(([t]) => t as UpBlockType),
    upBlockGating: up.map(([, g]) => g),
    blockOutChannels: [...channels],
    layersPerBlock: perBlock(c.layers_per_block, nDown, file, 'layers_per_block'),
    transformerLayersPerBlock: perBlock(c.transformer_layers_per_block, nDown, file, 'transformer_layers_per_block'),
    attentionHeads: heads,
    crossAttentionDim: c.cross_attention_dim,
    useLinearProjection: c.use_linear_projection,
    upcastAttention: c.upcast_attention,
    normNumGroups: c.norm_num_groups,
    normEps: c.norm_eps,
    downsamplePadding: c.downsample_padding,
    midBlockScaleFactor: c.mid_block_scale_factor,
    resnetOutScaleFactor: c.resnet_out_scale_factor,
    convInKernel: c.conv_in_kernel,
    convOutKernel: c.conv_out_kernel,
    timeEmbedDim: c.time_embedding_dim ?? 4 * channels[0]!,
    resnetTimeScaleShift: c.resnet_time_scale_shift,
    additionEmbedType: c.addition_embed_type,
    additionEmbedHeads: c.addition_embed_type_num_heads,
    gatedFf: c.gated_ff,
    ffGateWidth: c.ff_gate_width,
  };
}

/** Reads and validates a diffusers UNet `config.json` file. */
export function readUNetConfig(file: string): UNetConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new InputError('cannot read UNet config', { code: 'E_FILE_MISSING', file, cause: err });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new InputError('UNet config is not valid JSON', { code: 'E_JSON', file, cause: err });
  }
  return parseUNetConfig(json, file);
}

// ---------------------------------------------------------------------------------------------------------------
// Structure helpers: the per-block channels, heads and layer counts everyone needs (gate layout, MACs, pruning).

/** Number of heads of down block i (= `attentionHeads[i]`). */
export function downBlockHeads(cfg: UNetConfig, i: number): number {
  return cfg.attentionHeads[i]!;
}

/** Number of heads of the mid block: the **last** entry. */
export function midBlockHeads(cfg: UNetConfig): number {
  return cfg.attentionHeads[cfg.attentionHeads.length - 1]!;
}

/** Number of heads of up block i: entry i of the **reversed** list (for [2,4,8,8]: 8, 8, 4, 2). */
export function upBlockHeads(cfg: UNetConfig, i: number): number {
  return cfg.attentionHeads[cfg.attentionHeads.length - 1 - i]!;
}

export interface ResnetSpec {
  /** Module prefix, e.g. `down_blocks.1.resnets.0`. */
  name: string;
  /** Channels entering the ResNet (for up blocks: hidden + skip). */
  inChannels: number;
  outChannels: number;
  /** Up blocks only: channels of the skip tensor concatenated after the hidden state. */
  skipChannels: number;
  /** Output scale factor (mid block: `mid_block_scale_factor`; else `resnet_out_scale_factor`). */
  outputScaleFactor: number;
  /** `resnet_time_scale_shift: "scale_shift"`: time_emb_proj has 2·outChannels rows (scale, then shift). */
  timeScaleShift: boolean;
  /** True when the reference gives this ResNet a depth gate. */
  hasDepthGate: boolean;
}

export interface TransformerSpec {
  /** Module prefix, e.g. `down_blocks.0.attentions.1`. */
  name: string;
  channels: number;
  heads: number;
  headDim: number;
  /** BasicTransformerBlocks inside (`transformer_blocks.0..n-1`). */
  layers: number;
  hasDepthGate: boolean;
}

export interface BlockSpec {
  /** `down_blocks.i`, `mid_block`, `up_blocks.i`. */
  name: string;
  /** Block-output key of `forward`: `down0..`, `mid`, `up0..`. */
  key: string;
  kind: 'down' | 'mid' | 'up';
  index: number;
  type: DownBlockType | MidBlockType | UpBlockType;
  gating: BlockGating;
  crossAttention: boolean;
  inChannels: number;
  outChannels: number;
  resnets: ResnetSpec[];
  attentions: TransformerSpec[];
  /** Down blocks: a stride-2 downsampler follows (all but the last). Up blocks: an upsampler (all but the last). */
  resample: boolean;
}

export interface UNetStructure {
  down: BlockSpec[];
  mid: BlockSpec;
  up: BlockSpec[];
  /** All blocks in forward order: down…, mid, up…. */
  blocks: BlockSpec[];
}

function depthFlags(gating: BlockGating, n: number): boolean[] {
  if (gating === 'widthDepth') return new Array<boolean>(n).fill(true);
  if (gating === 'widthHalfDepth') return Array.from({ length: n }, (_, k) => k === n - 1);
  return new Array<boolean>(n).fill(false);
}

/**
 * The full (unpruned) module structure of a UNet config, as diffusers builds it: channels of every ResNet (with the
 * up-block skip channels), heads and head size of every transformer, and which sub-blocks carry depth gates.
 */
export function unetStructure(cfg: UNetConfig): UNetStructure {
  const n = cfg.blockOutChannels.length;
  const ch = cfg.blockOutChannels;
  const down: BlockSpec[] = cfg.downBlockTypes.map((type, i) => {
    const inCh = i === 0 ? ch[0]! : ch[i - 1]!;
    const out = ch[i]!;
    const layers = cfg.layersPerBlock[i]!;
    const cross = type === 'CrossAttnDownBlock2D';
    const gating = cfg.downBlockGating[i]!;
    const rd = depthFlags(gating, layers);
    const heads = downBlockHeads(cfg, i);
    return {
      name: `down_blocks.${i}`,
      key: `down${i}`,
      kind: 'down',
      index: i,
      type,
      gating,
      crossAttention: cross,
      inChannels: inCh,
      outChannels: out,
      resnets: Array.from({ length: layers }, (_, k) => ({
        name: `down_blocks.${i}.resnets.${k}`,
        inChannels: k === 0 ? inCh : out,
        outChannels: out,
        skipChannels: 0,
        outputScaleFactor: cfg.resnetOutScaleFactor,
        timeScaleShift: cfg.resnetTimeScaleShift === 'scale_shift',
        hasDepthGate: rd[k]!,
      })),
      attentions: cross
        ? Array.from({ length: layers }, (_, k) => ({
            name: `down_blocks.${i}.attentions.${k}`,
            channels: out,
            heads,
            headDim: out / heads,
            layers: cfg.transformerLayersPerBlock[i]!,
            hasDepthGate: rd[k]!,
          }))
        : [],
      resample: i < n - 1,
    };
  });
  const midCh = ch[n - 1]!;
  const midHeads = midBlockHeads(cfg);
  const mid: BlockSpec = {
    name: 'mid_block',
    key: 'mid',
    kind: 'mid',
    index: 0,
    type: cfg.midBlockType,
    gating: cfg.midBlockGating,
    crossAttention: true,
    inChannels: midCh,
    outChannels: midCh,
    resnets: [0, 1].map((k) => ({
      name: `mid_block.resnets.${k}`,
      inChannels: midCh,
      outChannels: midCh,
      skipChannels: 0,
      outputScaleFactor: cfg.midBlockScaleFactor,
      timeScaleShift: cfg.resnetTimeScaleShift === 'scale_shift',
      hasDepthGate: false,
    })),
    attentions: [
      {
        name: 'mid_block.attentions.0',
        channels: midCh,
        heads: midHeads,
        headDim: midCh / midHeads,
        layers: cfg.transformerLayersPerBlock[n - 1]!,
        hasDepthGate: false,
      },
    ],
    resample: false,
  };
  const rev = [...ch].reverse();
  const up: BlockSpec[] = cfg.upBlockTypes.map((type, i) => {
    const out = rev[i]!;
    const prev = i === 0 ? rev[0]! : rev[i - 1]!;
    const skipIn = rev[Math.min(i + 1, n - 1)]!;
    const layers = cfg.layersPerBlock[n - 1 - i]! + 1;
    const cross = type === 'CrossAttnUpBlock2D';
    const gating = cfg.upBlockGating[i]!;
    const rd = depthFlags(gating, layers);
    const heads = upBlockHeads(cfg, i);
    return {
      name: `up_blocks.${i}`,
      key: `up${i}`,
      kind: 'up',
      index: i,
      type,
      gating,
      crossAttention: cross,
      inChannels: prev,
      outChannels: out,
      resnets: Array.from({ length: layers }, (_, k) => {
        const skip = k === layers - 1 ? skipIn : out;
        const hidden = k === 0 ? prev : out;
        return {
          name: `up_blocks.${i}.resnets.${k}`,
          inChannels: hidden + skip,
          outChannels: out,
          skipChannels: skip,
          outputScaleFactor: cfg.resnetOutScaleFactor,
        timeScaleShift: cfg.resnetTimeScaleShift === 'scale_shift',
          hasDepthGate: rd[k]!,
        };
      }),
      attentions: cross
        ? Array.from({ length: layers }, (_, k) => ({
            name: `up_blocks.${i}.attentions.${k}`,
            channels: out,
            heads,
            headDim: out / heads,
            layers: cfg.transformerLayersPerBlock[n - 1 - i]!,
            hasDepthGate: rd[k]!,
          }))
        : [],
      resample: i < n - 1,
    };
  });
  return { down, mid, up, blocks: [...down, mid, ...up] };
}
