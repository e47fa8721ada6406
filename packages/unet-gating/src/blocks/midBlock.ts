import type { ParamScope } from '../weights';
import type { BlockSpec } from '../config';
import type { ForwardContext, LoadContext } from './context';
import { ResnetBlock2D } from './resnet';
import { Transformer2DModel } from './transformer';
import { runResnet, runTransformer } from './downBlock';

/** `UNetMidBlock2DCrossAttn`: ResNet → Transformer2DModel → ResNet (width gates only in APTP). */
export class UNetMidBlock2DCrossAttn<T> {
  private constructor(
    readonly spec: BlockSpec,
    readonly resnets: (ResnetBlock2D<T> | null)[],
    readonly attentions: (Transformer2DModel<T> | null)[],
  ) {}

  static load<T>(p: ParamScope<T>, spec: BlockSpec, lc: LoadContext): UNetMidBlock2DCrossAttn<T> {
    const resnets = spec.resnets.map((r, k) => ResnetBlock2D.load(p.child(`resnets.${k}`), r, lc));
    const attentions = spec.attentions.map((a, k) => Transformer2DModel.load(p.child(`attentions.${k}`), a, lc));
    return new UNetMidBlock2DCrossAttn(spec, resnets, attentions);
  }

  forward(ctx: ForwardContext<T>, x: T): T {
    let h = runResnet(ctx, this.resnets[0]!, this.spec.resnets[0]!.name, x);
    h = runTransformer(ctx, this.attentions[0]!, this.spec.attentions[0]!.name, h);
    h = runResnet(ctx, this.resnets[1]!, this.spec.resnets[1]!.name, h);
    ctx.capture?.(this.spec.name, h, 'map');
    return h;
  }
}
