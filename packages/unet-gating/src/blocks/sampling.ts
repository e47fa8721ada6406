import type { ParamScope, LoadedParam } from '../weights';
import type { ForwardContext } from './context';

/** `Downsample2D` with `use_conv`: 3×3 conv, stride 2, padding `downsample_padding` (1). */
export class Downsample2D<T> {
  private constructor(
    readonly name: string,
    readonly conv: LoadedParam<T>,
    private readonly padding: number,
  ) {}

  static load<T>(p: ParamScope<T>, channels: number, padding: number): Downsample2D<T> {
    return new Downsample2D(p.prefix, p.conv('conv', [channels, channels, 3, 3]), padding);
  }

  forward(ctx: ForwardContext<T>, x: T): T {
    return ctx.o.conv2d(x, this.conv.weight, this.conv.bias, { stride: 2, padding: this.padding });
  }
}

/** `Upsample2D` with `use_conv`: nearest ×2, then 3×3 conv, padding 1. */
export class Upsample2D<T> {
  private constructor(
    readonly name: string,
    readonly conv: LoadedParam<T>,
  ) {}

  static load<T>(p: ParamScope<T>, channels: number): Upsample2D<T> {
    return new Upsample2D(p.prefix, p.conv('conv', [channels, channels, 3, 3]));
  }

  forward(ctx: ForwardContext<T>, x: T): T {
    return ctx.o.conv2d(ctx.o.upsampleNearest2x(x), this.conv.weight, this.conv.bias, { padding: 1 });
  }
}
