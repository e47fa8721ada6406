import type { ParamScope, LoadedParam } from '../weights';
import type { TransformerSpec } from '../config';
import type { ForwardContext, LoadContext } from './context';
import { gatesOf } from './context';
import { Attention } from './attention';
import { FeedForward } from './feedForward';

const LAYER_NORM_EPS = 1e-5;
const TRANSFORMER_GROUP_NORM_EPS = 1e-6;

/** `BasicTransformerBlock`: self-attention, cross-attention, GEGLU feed-forward, each pre-LayerNorm + residual. */
export class BasicTransformerBlock<T> {
  private constructor(
    readonly name: string,
    readonly norm1: { weight: T; bias: T },
    readonly attn1: Attention<T>,
    readonly norm2: { weight: T; bias: T },
    readonly attn2: Attention<T>,
    readonly norm3: { weight: T; bias: T },
    readonly ff: FeedForward<T>,
    private readonly ffUnitsPerGroup: number,
  ) {}

  static load<T>(p: ParamScope<T>, spec: TransformerSpec, lc: LoadContext): BasicTransformerBlock<T> {
    const c = spec.channels;
    return new BasicTransformerBlock(
      p.prefix,
      p.norm('norm1', c),
      Attention.load(p.child('attn1'), c, c, spec.headDim, spec.heads, lc.pruned),
      p.norm('norm2', c),
      Attention.load(p.child('attn2'), c, lc.cfg.crossAttentionDim, spec.headDim, spec.heads, lc.pruned),
      p.norm('norm3', c),
      FeedForward.load(p.child('ff'), c, lc.pruned),
      (4 * c) / lc.ffGateWidth,
    );
  }

  /** x `[B, S, C]` tokens. */
  forward(ctx: ForwardContext<T>, x: T, gateOwner: string): T {
    const { o, capture } = ctx;
    const g = gatesOf(ctx, gateOwner);
    const n1 = o.layerNorm(x, this.norm1.weight, this.norm1.bias, LAYER_NORM_EPS);
    capture?.(`${this.name}.norm1`, n1, 'tokens');
    const a1 = this.attn1.forward(ctx, n1, n1, g?.selfAttnHeadGate);
    capture?.(`${this.name}.attn1`, a1, 'tokens');
    let h = o.add(a1, x);
    const n2 = o.layerNorm(h, this.norm2.weight, this.norm2.bias, LAYER_NORM_EPS);
    capture?.(`${this.name}.norm2`, n2, 'tokens');
    const a2 = this.attn2.forward(ctx, n2, ctx.context, g?.crossAttnHeadGate);
    capture?.(`${this.name}.attn2`, a2, 'tokens');
    h = o.add(a2, h);
    const n3 = o.layerNorm(h, this.norm3.weight, this.norm3.bias, LAYER_NORM_EPS);
    capture?.(`${this.name}.norm3`, n3, 'tokens');
    const f = this.ff.forward(ctx, n3, g?.ffGate, this.ffUnitsPerGroup);
    capture?.(`${this.name}.ff`, f, 'tokens');
    return o.add(f, h);
  }
}

/**
 * `Transformer2DModel` (continuous input): GroupNorm (eps 1e-6) → `proj_in` → BasicTransformerBlocks → `proj_out`
 * → `+ x`. With `use_linear_projection` the projections are Linear on tokens; otherwise 1×1 convs on the feature
 * map (applied before flattening / after unflattening).
 */
export class Transformer2DModel<T> {
  private constructor(
    readonly spec: TransformerSpec,
    private readonly groups: number,
    private readonly linearProjection: boolean,
    readonly norm: { weight: T; bias: T },
    readonly projIn: LoadedParam<T>,
    readonly transformerBlocks: BasicTransformerBlock<T>[],
    readonly projOut: LoadedParam<T>,
  ) {}

  /** Loads `<prefix>` or returns null when a pruned expert dropped it. */
  static load<T>(p: ParamScope<T>, spec: TransformerSpec, lc: LoadContext): Transformer2DModel<T> | null {
    if (lc.pruned && !p.hasModule()) return null;
    const c = spec.channels;
    const lin = lc.cfg.useLinearProjection;
    const projShape = lin ? [c, c] : [c, c, 1, 1];
    const norm = p.norm('norm', c);
    const projIn = lin ? p.linear('proj_in', projShape) : p.conv('proj_in', projShape);
    const blocks = Array.from({ length: spec.layers }, (_, i) => BasicTransformerBlock.load(p.child(`transformer_blocks.${i}`), spec, lc));
    const projOut = lin ? p.linear('proj_out', projShape) : p.conv('proj_out', projShape);
    return new Transformer2DModel(spec, lc.cfg.normNumGroups, lin, norm, projIn, blocks, projOut);
  }

  forward(ctx: ForwardContext<T>, x: T): T {
    const { o, capture } = ctx;
    const name = this.spec.name;
    const { height, width } = o.featureSize(x);
    const n = o.groupNorm(x, this.norm.weight, this.norm.bias, this.groups, TRANSFORMER_GROUP_NORM_EPS);
    capture?.(`${name}.norm`, n, 'map');
    let tokens: T;
    if (this.linearProjection) {
      tokens = o.linear(o.toTokens(n), this.projIn.weight, this.projIn.bias);
      capture?.(`${name}.proj_in`, tokens, 'tokens');
    } else {
      const p = o.conv2d(n, this.projIn.weight, this.projIn.bias, { padding: 0 });
      capture?.(`${name}.proj_in`, p, 'map');
      tokens = o.toTokens(p);
    }
    for (const block of this.transformerBlocks) tokens = block.forward(ctx, tokens, name);
    let out: T;
    if (this.linearProjection) {
      const p = o.linear(tokens, this.projOut.weight, this.projOut.bias);
      capture?.(`${name}.proj_out`, p, 'tokens');
      out = o.fromTokens(p, height, width);
    } else {
      out = o.conv2d(o.fromTokens(tokens, height, width), this.projOut.weight, this.projOut.bias, { padding: 0 });
      capture?.(`${name}.proj_out`, out, 'map');
    }
    return o.add(out, x);
  }
}
