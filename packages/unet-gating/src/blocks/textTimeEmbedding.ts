import type { Ops } from '@aptp/core';
import type { ParamScope, LoadedParam } from '../weights';
import type { UNetConfig } from '../config';

/**
 * `TextTimeEmbedding` (diffusers `embeddings.py`, `addition_embed_type: "text"`, from DeepFloyd IF): the text
 * states are pooled into one vector that is added to the time embedding, so every ResNet (through `time_emb_proj`)
 * sees the prompt, not only the cross-attention layers.
 *
 *   x   = norm1(c)                                   c: text states [B, S, D]
 *   cls = mean_s(x) + positional_embedding            [B, D]
 *   a   = attention(q_proj(cls), k_proj([cls; x]), v_proj([cls; x]))   heads `additionEmbedHeads`, one query
 *   aug = norm2(proj(a))                              [B, timeEmbedDim]
 *
 * (`AttentionPooling` scales q and k by d^−¼ each: the same softmax(q·k/√d) as `Ops.attention`.)
 */
export class TextTimeEmbedding<T> {
  private constructor(
    private readonly heads: number,
    readonly norm1: { weight: T; bias: T },
    readonly positionalEmbedding: T,
    readonly qProj: LoadedParam<T>,
    readonly kProj: LoadedParam<T>,
    readonly vProj: LoadedParam<T>,
    readonly proj: LoadedParam<T>,
    readonly norm2: { weight: T; bias: T },
  ) {}

  static load<T>(p: ParamScope<T>, cfg: UNetConfig): TextTimeEmbedding<T> {
    const d = cfg.crossAttentionDim;
    const pool = p.child('pool');
    return new TextTimeEmbedding(
      cfg.additionEmbedHeads,
      p.norm('norm1', d),
      pool.row('positional_embedding', d),
      pool.linear('q_proj', [d, d]),
      pool.linear('k_proj', [d, d]),
      pool.linear('v_proj', [d, d]),
      p.linear('proj', [cfg.timeEmbedDim, d]),
      p.norm('norm2', cfg.timeEmbedDim),
    );
  }

  /** `aug` `[B, timeEmbedDim]` from the text states `[B, S, D]`. LayerNorm eps: PyTorch's default 1e-5. */
  forward(o: Ops<T>, context: T): T {
    const x = o.layerNorm(context, this.norm1.weight, this.norm1.bias, 1e-5);
    const cls = o.add(o.meanTokens(x), this.positionalEmbedding); // [B, D]
    const tokens = o.concatTokens([o.asToken(cls), x]); // [B, 1 + S, D]
    const q = o.linear(o.asToken(cls), this.qProj.weight, this.qProj.bias); // [B, 1, D]
    const k = o.linear(tokens, this.kProj.weight, this.kProj.bias);
    const v = o.linear(tokens, this.vProj.weight, this.vProj.bias);
    const pooled = o.meanTokens(o.attention(q, k, v, this.heads)); // the single query token → [B, D]
    const h = o.linear(pooled, this.proj.weight, this.proj.bias);
    return o.layerNorm(h, this.norm2.weight, this.norm2.bias, 1e-5);
  }
}
