import { ShapeError } from '@aptp/core';
import type { ParamScope } from '../weights';
import type { BlockSpec } from '../config';
import type { ForwardContext, LoadContext } from './context';
import { gatesOf } from './context';
import { ResnetBlock2D } from './resnet';
import { Transformer2DModel } from './transformer';
import { Downsample2D } from './sampling';
import { applyDepth } from '../gates/apply';

/** Output of a down block: its hidden state and the skip tensors it pushes (one per layer, then the downsampler's). */
export interface DownBlockOutput<T> {
  hidden: T;
  resSamples: T[];
}

export interface DownBlock<T> {
  readonly spec: BlockSpec;
  forward(ctx: ForwardContext<T>, x: T): DownBlockOutput<T>;
}

/** Runs a sub-block (or passes through when a pruned expert dropped it) and applies its depth gate. */
function runResnet<T>(ctx: ForwardContext<T>, r: ResnetBlock2D<T> | null, name: string, x: T): T {
  const depth = gatesOf(ctx, name)?.depthGate;
  if (depth !== undefined && r && r.spec.inChannels !== r.spec.outChannels) {
    // y = (1 − d)·x + d·f(x) needs f to keep the shape; the reference only depth-gates ResNets that do (APTP.md §3.1)
    throw new ShapeError(`${name} carries a depth gate but changes channels (${r.spec.inChannels} → ${r.spec.outChannels}): a skipped ResNet cannot pass its input through`, {
      code: 'E_SHAPE',
      field: name,
      expected: 'depth gates only on ResNets that keep their channels (layers_per_block ≥ 2 with *HalfGated blocks, as SD 2.1)',
      found: `${r.spec.inChannels} → ${r.spec.outChannels}`,
    });
  }
  const fx = r ? r.forward(ctx, x) : x;
  const y = applyDepth(ctx.o, x, fx, depth);
  ctx.capture?.(name, y, 'map');
  return y;
}

function runTransformer<T>(ctx: ForwardContext<T>, t: Transformer2DModel<T> | null, name: string, x: T): T {
  const fx = t ? t.forward(ctx, x) : x;
  const y = applyDepth(ctx.o, x, fx, gatesOf(ctx, name)?.depthGate);
  ctx.capture?.(name, y, 'map');
  return y;
}

function finish<T>(ctx: ForwardContext<T>, spec: BlockSpec, downsampler: Downsample2D<T> | null, x: T, resSamples: T[]): DownBlockOutput<T> {
  let h = x;
  if (downsampler) {
    h = downsampler.forward(ctx, h);
    ctx.capture?.(`${spec.name}.downsamplers.0`, h, 'map');
    resSamples.push(h);
  }
  if (ctx.capture) {
    ctx.capture(`${spec.name}.hidden_states`, h, 'map');
    resSamples.forEach((r, j) => ctx.capture!(`${spec.name}.res_samples.${j}`, r, 'map'));
  }
  return { hidden: h, resSamples };
}

/** `DownBlock2D`: ResNets, then an optional stride-2 downsampler. */
export class DownBlock2D<T> implements DownBlock<T> {
  private constructor(
    readonly spec: BlockSpec,
    readonly resnets: (ResnetBlock2D<T> | null)[],
    readonly downsampler: Downsample2D<T> | null,
  ) {}

  static load<T>(p: ParamScope<T>, spec: BlockSpec, lc: LoadContext): DownBlock2D<T> {
    const resnets = spec.resnets.map((r, k) => ResnetBlock2D.load(p.child(`resnets.${k}`), r, lc));
    const down = spec.resample ? Downsample2D.load(p.child('downsamplers.0'), spec.outChannels, lc.cfg.downsamplePadding) : null;
    return new DownBlock2D(spec, resnets, down);
  }

  forward(ctx: ForwardContext<T>, x: T): DownBlockOutput<T> {
    const resSamples: T[] = [];
    let h = x;
    this.resnets.forEach((r, k) => {
      h = runResnet(ctx, r, this.spec.resnets[k]!.name, h);
      resSamples.push(h);
    });
    return finish(ctx, this.spec, this.downsampler, h, resSamples);
  }
}

/** `CrossAttnDownBlock2D`: (ResNet → Transformer2DModel) per layer, then an optional stride-2 downsampler. */
export class CrossAttnDownBlock2D<T> implements DownBlock<T> {
  private constructor(
    readonly spec: BlockSpec,
    readonly resnets: (ResnetBlock2D<T> | null)[],
    readonly attentions: (Transformer2DModel<T> | null)[],
    readonly downsampler: Downsample2D<T> | null,
  ) {}

  static load<T>(p: ParamScope<T>, spec: BlockSpec, lc: LoadContext): CrossAttnDownBlock2D<T> {
    const resnets = spec.resnets.map((r, k) => ResnetBlock2D.load(p.child(`resnets.${k}`), r, lc));
    const attentions = spec.attentions.map((a, k) => Transformer2DModel.load(p.child(`attentions.${k}`), a, lc));
    const down = spec.resample ? Downsample2D.load(p.child('downsamplers.0'), spec.outChannels, lc.cfg.downsamplePadding) : null;
    return new CrossAttnDownBlock2D(spec, resnets, attentions, down);
  }

  forward(ctx: ForwardContext<T>, x: T): DownBlockOutput<T> {
    const resSamples: T[] = [];
    let h = x;
    this.resnets.forEach((r, k) => {
      h = runResnet(ctx, r, this.spec.resnets[k]!.name, h);
      h = runTransformer(ctx, this.attentions[k]!, this.spec.attentions[k]!.name, h);
      resSamples.push(h);
    });
    return finish(ctx, this.spec, this.downsampler, h, resSamples);
  }
}

export { runResnet, runTransformer };
