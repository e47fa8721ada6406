import type { ParamScope } from '../weights';
import type { BlockSpec, ResnetSpec } from '../config';
import type { ForwardContext, LoadContext } from './context';
import { gatesOf } from './context';
import { ResnetBlock2D } from './resnet';
import { Transformer2DModel } from './transformer';
import { Upsample2D } from './sampling';
import { runTransformer } from './downBlock';
import { applyDepth } from '../gates/apply';

export interface UpBlock<T> {
  readonly spec: BlockSpec;
  /** `skips`: this block's skip tensors in push order; the last one is consumed first. */
  forward(ctx: ForwardContext<T>, x: T, skips: T[]): T;
}

/**
 * Up-block ResNet layer: `resnet([h, skip])` (h first). APTP depth gate: `x_in = h` (the up-path hidden state, the
 * first C_out channels), so a dropped up-ResNet passes h through and ignores its skip (golden/aptp README §4.1).
 */
function runUpResnet<T>(ctx: ForwardContext<T>, r: ResnetBlock2D<T> | null, spec: ResnetSpec, h: T, skip: T): T {
  const { o } = ctx;
  const depth = gatesOf(ctx, spec.name)?.depthGate;
  let y: T;
  if (!r) {
    y = h;
  } else {
    const fx = r.forward(ctx, o.concatChannels([h, skip]));
    const xIn = depth === undefined || o.featureSize(h).channels === spec.outChannels ? h : o.sliceChannels(h, 0, spec.outChannels);
    y = applyDepth(o, xIn, fx, depth);
  }
  ctx.capture?.(spec.name, y, 'map');
  return y;
}

function finish<T>(ctx: ForwardContext<T>, spec: BlockSpec, upsampler: Upsample2D<T> | null, x: T): T {
  let h = x;
  if (upsampler) {
    h = upsampler.forward(ctx, h);
    ctx.capture?.(`${spec.name}.upsamplers.0`, h, 'map');
  }
  ctx.capture?.(spec.name, h, 'map');
  return h;
}

/** `UpBlock2D`: per layer pop a skip, concat, ResNet; then an optional nearest ×2 + conv upsampler. */
export class UpBlock2D<T> implements UpBlock<T> {
  private constructor(
    readonly spec: BlockSpec,
    readonly resnets: (ResnetBlock2D<T> | null)[],
    readonly upsampler: Upsample2D<T> | null,
  ) {}

  static load<T>(p: ParamScope<T>, spec: BlockSpec, lc: LoadContext): UpBlock2D<T> {
    const resnets = spec.resnets.map((r, k) => ResnetBlock2D.load(p.child(`resnets.${k}`), r, lc));
    const up = spec.resample ? Upsample2D.load(p.child('upsamplers.0'), spec.outChannels) : null;
    return new UpBlock2D(spec, resnets, up);
  }

  forward(ctx: ForwardContext<T>, x: T, skips: T[]): T {
    let h = x;
    this.resnets.forEach((r, k) => {
      h = runUpResnet(ctx, r, this.spec.resnets[k]!, h, skips[skips.length - 1 - k]!);
    });
    return finish(ctx, this.spec, this.upsampler, h);
  }
}

/** `CrossAttnUpBlock2D`: per layer pop a skip, concat, ResNet, Transformer2DModel; then an optional upsampler. */
export class CrossAttnUpBlock2D<T> implements UpBlock<T> {
  private constructor(
    readonly spec: BlockSpec,
    readonly resnets: (ResnetBlock2D<T> | null)[],
    readonly attentions: (Transformer2DModel<T> | null)[],
    readonly upsampler: Upsample2D<T> | null,
  ) {}

  static load<T>(p: ParamScope<T>, spec: BlockSpec, lc: LoadContext): CrossAttnUpBlock2D<T> {
    const resnets = spec.resnets.map((r, k) => ResnetBlock2D.load(p.child(`resnets.${k}`), r, lc));
    const attentions = spec.attentions.map((a, k) => Transformer2DModel.load(p.child(`attentions.${k}`), a, lc));
    const up = spec.resample ? Upsample2D.load(p.child('upsamplers.0'), spec.outChannels) : null;
    return new CrossAttnUpBlock2D(spec, resnets, attentions, up);
  }

  forward(ctx: ForwardContext<T>, x: T, skips: T[]): T {
    let h = x;
    this.resnets.forEach((r, k) => {
      h = runUpResnet(ctx, r, this.spec.resnets[k]!, h, skips[skips.length - 1 - k]!);
      h = runTransformer(ctx, this.attentions[k]!, this.spec.attentions[k]!.name, h);
    });
    return finish(ctx, this.spec, this.upsampler, h);
  }
}
