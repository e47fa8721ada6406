import { ShapeError } from '@aptp/core';
import type { ParamScope, LoadedParam } from '../weights';
import type { ResnetSpec } from '../config';
import type { ForwardContext, LoadContext } from './context';
import { gatesOf } from './context';
import { gateChannelGroups } from '../gates/apply';

/**
 * `ResnetBlock2D` (diffusers `resnet.py`), `resnet_time_scale_shift = "default"` (SD):
 *   `h = conv1(silu(norm1(x))) + time_emb_proj(silu(temb))`, `h = conv2(silu(norm2(h)))`, `(shortcut(x) + h) / scale`;
 * `"scale_shift"` (ADM's AdaGN): time_emb_proj has 2·C outputs, `[scale, shift] = chunk(time_emb_proj(silu(temb)), 2)`,
 *   `h = conv1(silu(norm1(x)))`, `h = conv2(silu(norm2(h)·(1 + scale) + shift))`.
 * The inner width (conv1 out / norm2 / conv2 in) is read from the weights, so a pruned expert (fewer channel groups,
 * norm2 with fewer groups of the same size) runs this same code. APTP width gate: `gates/apply.ts`; 'reference'
 * placement gates before norm2 (norm2's bias, and with scale_shift the shift, still reach a gated channel), so only
 * 'consistent' placement (after the SiLU) equals the pruned expert.
 */
export class ResnetBlock2D<T> {
  private constructor(
    readonly spec: ResnetSpec,
    private readonly eps: number,
    private readonly norm1Groups: number,
    readonly norm2Groups: number,
    readonly channelsPerGroup: number,
    readonly norm1: { weight: T; bias: T },
    readonly conv1: LoadedParam<T>,
    readonly timeEmbProj: LoadedParam<T>,
    readonly norm2: { weight: T; bias: T },
    readonly conv2: LoadedParam<T>,
    readonly convShortcut: LoadedParam<T> | null,
  ) {}

  /** Loads `<prefix>` or returns null when a pruned expert dropped it (no weights under the prefix). */
  static load<T>(p: ParamScope<T>, spec: ResnetSpec, lc: LoadContext): ResnetBlock2D<T> | null {
    if (lc.pruned && !p.hasModule()) return null;
    const { cfg } = lc;
    const { inChannels: cin, outChannels: cout } = spec;
    const cpg = cout / cfg.normNumGroups;
    const norm1 = p.norm('norm1', cin);
    const conv1 = p.conv('conv1', [lc.pruned ? null : cout, cin, null, null]);
    const inner = conv1.shape[0]!;
    if (inner % cpg !== 0 || inner > cout) {
      throw new ShapeError('pruned ResNet width must be whole GroupNorm groups', { code: 'E_SHAPE', file: p.file, field: p.key('conv1.weight'), expected: `a multiple of ${cpg} up to ${cout} output channels`, found: inner });
    }
    const k = conv1.shape[2]!;
    const timeEmbProj = p.linear('time_emb_proj', [spec.timeScaleShift ? 2 * inner : inner, cfg.timeEmbedDim]); // scale_shift: rows [scale; shift]
    const norm2 = p.norm('norm2', inner);
    const conv2 = p.conv('conv2', [cout, inner, k, k]);
    const convShortcut = cin !== cout ? p.conv('conv_shortcut', [cout, cin, 1, 1]) : null;
    return new ResnetBlock2D(spec, cfg.normEps, cfg.normNumGroups, inner / cpg, cpg, norm1, conv1, timeEmbProj, norm2, conv2, convShortcut);
  }

  forward(ctx: ForwardContext<T>, x: T): T {
    const { o, capture } = ctx;
    const name = this.spec.name;
    const gate = gatesOf(ctx, name)?.resnetGate;
    const pad = (this.conv1.shape[2]! - 1) / 2;
    const n1 = o.groupNorm(x, this.norm1.weight, this.norm1.bias, this.norm1Groups, this.eps);
    capture?.(`${name}.norm1`, n1, 'map');
    let h = o.conv2d(o.silu(n1), this.conv1.weight, this.conv1.bias, { padding: pad });
    capture?.(`${name}.conv1`, h, 'map');
    const t = o.linear(ctx.tembAct, this.timeEmbProj.weight, this.timeEmbProj.bias); // [B, inner] ([B, 2·inner] scale_shift)
    capture?.(`${name}.time_emb_proj`, t, 'vector');
    const scaleShift = this.spec.timeScaleShift;
    if (!scaleShift) h = o.addChannels(h, t);
    if (ctx.placement === 'reference') h = gateChannelGroups(o, h, gate, this.channelsPerGroup);
    let n2 = o.groupNorm(h, this.norm2.weight, this.norm2.bias, this.norm2Groups, this.eps);
    capture?.(`${name}.norm2`, n2, 'map');
    if (scaleShift) {
      const inner = this.norm2Groups * this.channelsPerGroup;
      // n2·(1 + scale) + shift
      n2 = o.addChannels(o.add(n2, o.scaleChannels(n2, o.sliceChannels(t, 0, inner))), o.sliceChannels(t, inner, inner));
    }
    h = o.silu(n2);
    if (ctx.placement === 'consistent') h = gateChannelGroups(o, h, gate, this.channelsPerGroup);
    h = o.conv2d(h, this.conv2.weight, this.conv2.bias, { padding: pad });
    capture?.(`${name}.conv2`, h, 'map');
    let s = x;
    if (this.convShortcut) {
      s = o.conv2d(x, this.convShortcut.weight, this.convShortcut.bias, { padding: 0 });
      capture?.(`${name}.conv_shortcut`, s, 'map');
    }
    const out = o.add(s, h);
    return this.spec.outputScaleFactor === 1 ? out : o.scale(out, 1 / this.spec.outputScaleFactor);
  }
}
