import type { Ops } from '@aptp/core';
import type { ParamScope, LoadedParam } from '../weights';
import type { UNetConfig } from '../config';

/**
 * `Timesteps` + `TimestepEmbedding` (diffusers `embeddings.py`): sinusoidal projection of the timestep (width
 * `block_out_channels[0]`), then `linear_2(silu(linear_1(·)))` (width `timeEmbedDim`).
 */
export class TimestepEmbedding<T> {
  private constructor(
    private readonly cfg: UNetConfig,
    readonly linear1: LoadedParam<T>,
    readonly linear2: LoadedParam<T>,
  ) {}

  static load<T>(p: ParamScope<T>, cfg: UNetConfig): TimestepEmbedding<T> {
    const c0 = cfg.blockOutChannels[0]!;
    const t = cfg.timeEmbedDim;
    return new TimestepEmbedding(cfg, p.linear('linear_1', [t, c0]), p.linear('linear_2', [t, t]));
  }

  /** Sinusoidal `t_proj` `[B, C0]`. */
  project(o: Ops<T>, timesteps: T): T {
    return o.timestepEmbedding(timesteps, this.cfg.blockOutChannels[0]!, this.cfg.flipSinToCos, this.cfg.freqShift);
  }

  /** `temb` `[B, T]` from `t_proj`. */
  forward(o: Ops<T>, tProj: T): T {
    const h = o.silu(o.linear(tProj, this.linear1.weight, this.linear1.bias));
    return o.linear(h, this.linear2.weight, this.linear2.bias);
  }
}
