import { parseUNetConfig, unetStructure } from '@aptp/unet-gating';
import { median, table } from './harness';
import { macsOf, sdShapedConfig } from './unetModels';

/** Not a benchmark: checks the counting the benchmark's GFLOP/s rest on. */

/** Σ over transformers of the reference counter's cross-attention excess (N² − N·T)·(2c + heads), written out per level. */
function crossAttentionExcess(levels: Array<{ n: number; c: number; heads: number; transformers: number }>, tokens: number): number {
  return levels.reduce((a, l) => a + l.transformers * (l.n * l.n - l.n * tokens) * (2 * l.c + l.heads), 0);
}

describe('unet bench models', () => {
  it('SD-2.1-shaped config: SD 2.1 block structure with head size 64 everywhere', () => {
    const cfg = parseUNetConfig(sdShapedConfig(1024));
    const s = unetStructure(cfg);
    const transformers = s.blocks.flatMap((b) => b.attentions);
    expect(transformers).toHaveLength(16);
    for (const t of transformers) expect(t.channels / t.heads).toBe(64);
    expect(cfg.crossAttentionDim).toBe(1024);
  });

  it('computed MACs = the MACs model minus its cross-attention quirk (keys counted as the query length)', () => {
    const weights = new Map();
    // SD-shaped at 32×32 latents, 77 tokens: 5 transformers on levels 0–2 (2 down + 3 up), 1 in the mid block.
    const sd = { config: parseUNetConfig(sdShapedConfig(1024)), latent: 32, tokens: 77, weights };
    const m = macsOf(sd);
    const sdLevels = [
      { n: 1024, c: 64, heads: 1, transformers: 5 },
      { n: 256, c: 128, heads: 2, transformers: 5 },
      { n: 64, c: 256, heads: 4, transformers: 5 },
      { n: 16, c: 256, heads: 4, transformers: 1 },
    ];
    expect(m.reference - m.computed).toBeCloseTo(crossAttentionExcess(sdLevels, 77), 0);
    // unet-tiny's structure (16,32,48,48; heads 2,4,8,8) at 16×16 with 7 tokens: the mid block has N = 4 < T = 7.
    const tinyCfg = parseUNetConfig({ block_out_channels: [16, 32, 48, 48], attention_head_dim: [2, 4, 8, 8], cross_attention_dim: 32, norm_num_groups: 8, use_linear_projection: true });
    const t = macsOf({ config: tinyCfg, latent: 16, tokens: 7, weights });
    const tinyLevels = [
      { n: 256, c: 16, heads: 2, transformers: 5 },
      { n: 64, c: 32, heads: 4, transformers: 5 },
      { n: 16, c: 48, heads: 8, transformers: 5 },
      { n: 4, c: 48, heads: 8, transformers: 1 },
    ];
    expect(t.reference - t.computed).toBeCloseTo(crossAttentionExcess(tinyLevels, 7), 0);
    expect(t.reference - t.computed).toBe(12_150_432);
  });

  it('harness: median and table', () => {
    expect(median([5, 1, 3])).toBe(3);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(table(['a', 'bb'], [['xyz', '1']], ['l', 'r']).split('\n')).toEqual(['| a   | bb |', '|-----|---:|', '| xyz |  1 |']);
  });
});
