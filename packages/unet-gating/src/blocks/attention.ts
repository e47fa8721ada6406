import type { ParamScope, LoadedParam } from '../weights';
import { ShapeError } from '@aptp/core';
import type { ForwardContext } from './context';
import { gateHeads } from '../gates/apply';

/**
 * `Attention` (diffusers `attention_processor.py`, default processor): `q = to_q(x)`, `k = to_k(ctx)`,
 * `v = to_v(ctx)` (no biases), per-head `softmax(q kᵀ/√d) v`, heads merged, `to_out.0`. The head count is read from
 * `to_q`'s rows at the config's head size, so a pruned expert with fewer heads runs the same code. The APTP head gate
 * multiplies q, k and v of each head.
 */
export class Attention<T> {
  private constructor(
    readonly name: string,
    readonly heads: number,
    readonly headDim: number,
    readonly toQ: LoadedParam<T>,
    readonly toK: LoadedParam<T>,
    readonly toV: LoadedParam<T>,
    readonly toOut: LoadedParam<T>,
  ) {}

  static load<T>(p: ParamScope<T>, channels: number, contextDim: number, headDim: number, heads: number, pruned: boolean): Attention<T> {
    const toQ = p.linear('to_q', [pruned ? null : heads * headDim, channels], false);
    const inner = toQ.shape[0]!;
    if (inner % headDim !== 0) {
      throw new ShapeError('attention inner width must be whole heads', { code: 'E_SHAPE', file: p.file, field: p.key('to_q.weight'), expected: `a multiple of head size ${headDim}`, found: inner });
    }
    const toK = p.linear('to_k', [inner, contextDim], false);
    const toV = p.linear('to_v', [inner, contextDim], false);
    const toOut = p.linear('to_out.0', [channels, inner]);
    return new Attention(p.prefix, inner / headDim, headDim, toQ, toK, toV, toOut);
  }

  /** x `[B, S, C]`, context `[B, T, D]` (x itself for self-attention) → `[B, S, C]`. */
  forward(ctx: ForwardContext<T>, x: T, context: T, headGate: T | undefined): T {
    const { o } = ctx;
    const q = gateHeads(o, o.linear(x, this.toQ.weight, null), headGate, this.headDim);
    const k = gateHeads(o, o.linear(context, this.toK.weight, null), headGate, this.headDim);
    const v = gateHeads(o, o.linear(context, this.toV.weight, null), headGate, this.headDim);
    const a = o.attention(q, k, v, this.heads);
    return o.linear(a, this.toOut.weight, this.toOut.bias);
  }
}
