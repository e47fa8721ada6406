import type { ParamScope, LoadedParam } from '../weights';
import type { ForwardContext } from './context';
import { gateFfUnits } from '../gates/apply';

/**
 * `FeedForward` with GEGLU (diffusers `attention.py` / `activations.py`): `p = net.0.proj(x)` split into
 * `value = p[..., :inner]` and `gate = p[..., inner:]`, `net.2(value · gelu(gate))` (exact erf GELU). `net.0.proj` is
 * split into its two halves once at load, so the forward never slices activations. The inner width comes from the
 * weights (pruned experts keep fewer units); the APTP FF gate multiplies both halves.
 */
export class FeedForward<T> {
  private constructor(
    readonly inner: number,
    readonly projValue: LoadedParam<T>,
    readonly projGate: LoadedParam<T>,
    readonly out: LoadedParam<T>,
  ) {}

  static load<T>(p: ParamScope<T>, channels: number, pruned: boolean): FeedForward<T> {
    const [projValue, projGate] = p.linearSplit('net.0.proj', [pruned ? null : 8 * channels, channels], 2) as [LoadedParam<T>, LoadedParam<T>];
    const inner = projValue.shape[0]!;
    const out = p.linear('net.2', [channels, inner]);
    return new FeedForward(inner, projValue, projGate, out);
  }

  /** x `[B, S, C]` → `[B, S, C]`; `unitsPerGroup` = full inner width / `ff_gate_width`. */
  forward(ctx: ForwardContext<T>, x: T, ffGate: T | undefined, unitsPerGroup: number): T {
    const { o } = ctx;
    const value = gateFfUnits(o, o.linear(x, this.projValue.weight, this.projValue.bias), ffGate, unitsPerGroup);
    const gate = gateFfUnits(o, o.linear(x, this.projGate.weight, this.projGate.bias), ffGate, unitsPerGroup);
    return o.linear(o.mul(value, o.gelu(gate)), this.out.weight, this.out.bias);
  }
}
