import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import fc from 'fast-check';
import { describeBackends, describeGolden, expectClose, expectNoTensorLeak, readGoldenJson, readGoldenTensors } from '@aptp/core/testing';
import { parseUNetConfig, readUNetConfig } from './config';
import { architectureLayout, withAptpGating } from './gates/layout';
import { currentMacsOf, currentPrunableMacs, currentTotalMacs, macsModel, prunableMacsShares, prunableTarget, resourceRatios } from './macs';
import type { MacsModel } from './macs';

interface GoldenSubBlock {
  name: string;
  kind: string;
  has_depth_gate: boolean;
  total_macs: number;
  prunable_macs: number;
  gate_prunable_macs: number[];
  module_macs: Record<string, number>;
}

function expectSubBlocks(model: MacsModel, golden: GoldenSubBlock[]): void {
  expect(model.subBlocks.length).toBe(golden.length);
  golden.forEach((g, i) => {
    const m = model.subBlocks[i]!;
    expect({ name: m.name, kind: m.kind, depth: m.hasDepthGate, total: m.totalMacs, prunable: m.prunableMacs, gates: m.gatePrunableMacs, modules: m.moduleMacs }).toEqual({
      name: g.name,
      kind: g.kind,
      depth: g.has_depth_gate,
      total: g.total_macs,
      prunable: g.prunable_macs,
      gates: g.gate_prunable_macs,
      modules: g.module_macs,
    });
  });
}

/** Relative closeness for MAC counts evaluated in float32 by the reference. */
function expectRel(actual: number, expected: number, rel: number, name: string): void {
  if (!(Math.abs(actual - expected) <= rel * Math.abs(expected))) throw new Error(`${name}: ${actual} vs ${expected} (rel ${Math.abs(actual - expected) / Math.abs(expected)} > ${rel})`);
}

describeGolden('aptp', 'MACs model vs the reference (tiny gated UNet, macs.json)', (dir) => {
  const golden = readGoldenJson<{
    input: { latent_height: number; latent_width: number; text_tokens: number };
    calc_macs_full: { total_macs: number; prunable_macs: number; cur_prunable_macs: number; cur_total_macs: number };
    shared_silu: { macs: number; calls_in_one_forward: number; elements_total: number };
    fixed_parts: Record<string, number>;
    sub_blocks: GoldenSubBlock[];
    sums: { sum_sub_block_total: number; sum_sub_block_prunable: number; sum_fixed_parts: number; D_formula: number };
    pruning_target: { p: number; p_prime: number; p_prime_float64: number; 'p_prime_for_p_0.5': number; 'p_prime_for_p_0.8': number };
    prunable_macs_list: number[][];
    cases: Record<string, {
      cur_prunable_macs: number[];
      cur_total_macs: number[];
      resource_ratio: number[];
      cur_prunable_macs_float64: number[];
      sub_blocks: Array<{ name: string; cur_prunable_macs: number[]; cur_total_macs: number[] }>;
    }>;
  }>(path.join(dir, 'macs.json'));
  const cfg = readUNetConfig(path.join(dir, 'config.json'));
  const model = macsModel(cfg, { latentHeight: golden.input.latent_height, latentWidth: golden.input.latent_width, textTokens: golden.input.text_tokens });
  const gateCases = readGoldenTensors(path.join(dir, 'gated_forward.safetensors'));

  it('counts every module of every sub-block exactly', () => expectSubBlocks(model, golden.sub_blocks));

  it('counts the fixed parts, the shared SiLU and the totals exactly', () => {
    expect(model.fixedParts).toEqual(golden.fixed_parts);
    expect(model.sharedSilu).toEqual({ macs: golden.shared_silu.macs, calls: golden.shared_silu.calls_in_one_forward, elements: golden.shared_silu.elements_total });
    expect(model.sumSubBlockTotal).toBe(golden.sums.sum_sub_block_total);
    expect(model.sumFixedParts).toBe(golden.sums.sum_fixed_parts);
    expect(model.totalMacs).toBe(golden.calc_macs_full.total_macs);
    expect(model.prunableMacs).toBe(golden.calc_macs_full.prunable_macs);
    expect(model.fullPrunableMacs).toBe(golden.sums.D_formula);
    expect(model.fullPrunableMacs).toBe(golden.calc_macs_full.cur_prunable_macs);
  });

  it("converts the pruning target: p' = 1 - (1 - p)·T/D", () => {
    expect(Math.abs(prunableTarget(0.6, model) - golden.pruning_target.p_prime_float64)).toBeLessThan(1e-12);
    expect(Math.abs(prunableTarget(0.6, model) - golden.pruning_target.p_prime)).toBeLessThan(1e-6);
    expect(Math.abs(prunableTarget(0.5, model) - golden.pruning_target['p_prime_for_p_0.5'])).toBeLessThan(1e-6);
    expect(Math.abs(prunableTarget(0.8, model) - golden.pruning_target['p_prime_for_p_0.8'])).toBeLessThan(1e-6);
    expect(() => prunableTarget(1.5, model)).toThrow(/pruningTarget/);
  });

  it('gives the per-gate prunable shares', () => {
    const shares = prunableMacsShares(model);
    expect(shares.map((s) => s.length)).toEqual(golden.prunable_macs_list.map((s) => s.length));
    shares.forEach((s, i) => s.forEach((v, j) => expect(Math.abs(v - golden.prunable_macs_list[i]![j]!)).toBeLessThan(1e-12)));
  });

  it.each(['ones', 'soft', 'hard'])('current MACs of the %s gate vectors (host, exact)', (name) => {
    const c = golden.cases[name]!;
    const g = gateCases.get(`gates.${name}`)!;
    const L = model.layout.vectorLength;
    for (let b = 0; b < g.shape[0]!; b++) {
      const cur = currentMacsOf(model, (g.data as Float32Array).subarray(b * L, (b + 1) * L));
      expect(cur.prunableMacs).toBe(c.cur_prunable_macs_float64[b]);
      expectRel(cur.totalMacs, c.cur_total_macs[b]!, 1e-6, `${name}[${b}] total`);
      expectRel(cur.prunableMacs / model.fullPrunableMacs, c.resource_ratio[b]!, 1e-6, `${name}[${b}] ratio`);
      c.sub_blocks.forEach((sb, i) => {
        expect(cur.subBlocks[i]!.name).toBe(sb.name);
        expect(Math.abs(cur.subBlocks[i]!.prunableMacs - sb.cur_prunable_macs[b]!)).toBeLessThanOrEqual(Math.max(2, 1e-6 * sb.cur_prunable_macs[b]!));
        expect(Math.abs(cur.subBlocks[i]!.totalMacs - sb.cur_total_macs[b]!)).toBeLessThanOrEqual(Math.max(2, 1e-6 * sb.cur_total_macs[b]!));
      });
    }
  });

  describeBackends('current MACs as tensors', () => {
    it.each(['ones', 'soft', 'hard'])('matches the reference for the %s gate vectors', (name) => {
      const c = golden.cases[name]!;
      const g = gateCases.get(`gates.${name}`)!;
      tf.tidy(() => {
        const gates = tf.tensor2d(g.data as Float32Array, g.shape as [number, number]);
        expectClose(currentPrunableMacs(model, gates), c.cur_prunable_macs_float64, { name: 'cur_prunable_macs', atol: 1e-6 * Math.max(...c.cur_prunable_macs_float64) });
        expectClose(currentTotalMacs(model, gates), c.cur_total_macs, { name: 'cur_total_macs', atol: 1e-6 * Math.max(...c.cur_total_macs) });
        expectClose(resourceRatios(model, gates), c.resource_ratio, { name: 'resource_ratio', atol: 1e-6 });
      });
    });

    it('passes straight-through gradients: (P_g/w_g)·δ/D per width entry, (Σρ·P + T − P)/D per depth entry', () => {
      const g = gateCases.get('gates.soft')!;
      const [B, L] = g.shape as [number, number];
      const dyData = [0.7, -1.3];
      const grad = tf.tidy(() => tf.grad((x: tf.Tensor) => resourceRatios(model, x as tf.Tensor2D))(tf.tensor2d(g.data as Float32Array, [B, L]), tf.tensor1d(dyData)));
      const expected = new Float64Array(B * L);
      const { layout } = model;
      for (let b = 0; b < B; b++) {
        const row = (g.data as Float32Array).subarray(b * L, (b + 1) * L);
        const cur = currentMacsOf(model, row);
        layout.subBlocks.forEach((sb, s) => {
          const m = model.subBlocks[s]!;
          const delta = sb.depthVectorIndex === null ? 1 : row[sb.depthVectorIndex]! >= 0.5 ? 1 : 0;
          sb.gates.forEach((gi, j) => {
            const wg = layout.widthGates[gi]!;
            for (let k = wg.offset; k < wg.end; k++) expected[b * L + k] = (dyData[b]! * (m.gatePrunableMacs[j]! / wg.width) * delta) / model.fullPrunableMacs;
          });
          if (sb.depthVectorIndex !== null) {
            const widthSum = sb.gates.reduce((a, gi, j) => {
              const wg = layout.widthGates[gi]!;
              let kept = 0;
              for (let k = wg.offset; k < wg.end; k++) kept += row[k]! >= 0.5 ? 1 : 0;
              return a + (kept / wg.width) * m.gatePrunableMacs[j]!;
            }, 0);
            const value = widthSum + m.totalMacs - m.prunableMacs;
            if (delta) expect(Math.abs(cur.subBlocks[s]!.prunableMacs - value)).toBeLessThan(1e-6 * value);
            expected[b * L + sb.depthVectorIndex] = (dyData[b]! * value) / model.fullPrunableMacs;
          }
        });
      }
      expectClose(grad, expected, { name: 'd ratio / d gates', atol: 1e-6 * Math.max(...expected.map(Math.abs)) });
      grad.dispose();
    });

    it('does not leak tensors', async () => {
      const g = gateCases.get('gates.soft')!;
      const gates = tf.tensor2d(g.data as Float32Array, g.shape as [number, number]);
      await expectNoTensorLeak(() => {
        tf.dispose([currentPrunableMacs(model, gates), currentTotalMacs(model, gates), resourceRatios(model, gates)]);
        tf.dispose(tf.tidy(() => tf.grad((x: tf.Tensor) => resourceRatios(model, x as tf.Tensor2D))(gates, tf.ones([2]))));
        tf.dispose(tf.tidy(() => tf.grad((x: tf.Tensor) => currentTotalMacs(model, x as tf.Tensor2D))(gates, tf.ones([2]))));
      });
      gates.dispose();
    });
  });
});

describeGolden('aptp', 'MACs model of the full-size SD 2.1 UNet (macs_sd21.json)', (dir) => {
  const golden = readGoldenJson<Record<string, any>>(path.join(dir, 'macs_sd21.json')); // eslint-disable-line @typescript-eslint/no-explicit-any
  const cfg = parseUNetConfig(golden.config, 'macs_sd21.json: config');
  // SD 2.1's own unet/config.json (plain block types): macsModel gates it the APTP way by default
  const plain = parseUNetConfig({
    attention_head_dim: [5, 10, 20, 20],
    block_out_channels: [320, 640, 1280, 1280],
    cross_attention_dim: 1024,
    norm_num_groups: 32,
    use_linear_projection: true,
    upcast_attention: true,
    sample_size: 96,
  });

  it('the gated reference config and the plain SD 2.1 config with APTP gating have the 1620-entry layout', () => {
    expect(golden.vector_length).toEqual([1606, 14, 1620]);
    expect(architectureLayout(cfg).vectorLength).toBe(1620);
    expect(architectureLayout(withAptpGating(plain))).toEqual(architectureLayout(cfg));
  });

  it.each(['256px_77tokens', '768px_1token'])('reproduces %s exactly', (setting) => {
    const g = golden[setting];
    const input = { latentHeight: g.input.latent_height, latentWidth: g.input.latent_width, textTokens: g.input.text_tokens };
    for (const c of [cfg, plain]) {
      const model = macsModel(c, input);
      expectSubBlocks(model, g.sub_blocks);
      expect(model.fixedParts).toEqual(g.fixed_parts);
      expect(model.sharedSilu.macs).toBe(g.shared_silu_macs);
      expect(model.sumSubBlockTotal).toBe(g.sums.sum_sub_block_total);
      expect(model.sumFixedParts).toBe(g.sums.sum_fixed_parts);
      expect(model.totalMacs).toBe(g.calc_macs.total_macs);
      expect(model.prunableMacs).toBe(g.calc_macs.prunable_macs);
      expect(model.fullPrunableMacs).toBe(g.sums.D_formula);
      expectRel(model.fullPrunableMacs, g.calc_macs.cur_prunable_macs, 1e-6, 'D vs float32 D');
      for (const [p, pp] of Object.entries(g.p_prime_for_p as Record<string, number>)) expect(Math.abs(prunableTarget(Number(p), model) - pp)).toBeLessThan(1e-6);
    }
  });

  it('gives the 1384.2 G of SD 2.1 at 768 px with the 1-token convention', () => {
    const model = macsModel(cfg, { latentHeight: 96, latentWidth: 96, textTokens: 1 });
    expect(model.totalMacs).toBe(1384186267264);
    expect((model.totalMacs / 1e9).toFixed(1)).toBe('1384.2');
  });
});

describe('MACs model properties', () => {
  const cfg = withAptpGating(
    parseUNetConfig({
      block_out_channels: [8, 16],
      norm_num_groups: 4,
      attention_head_dim: [2, 4],
      layers_per_block: 1,
      cross_attention_dim: 8,
      down_block_types: ['CrossAttnDownBlock2D', 'DownBlock2D'],
      up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D'],
    }),
    4,
  );
  const model = macsModel(cfg, { latentHeight: 6, latentWidth: 10, textTokens: 3 });
  const L = model.layout.vectorLength;

  it('is monotone: opening one more gate entry never lowers the current MACs; all-ones gives D and T', () => {
    fc.assert(
      fc.property(fc.array(fc.boolean(), { minLength: L, maxLength: L }), fc.integer({ min: 0, max: L - 1 }), (bits, k) => {
        const row = bits.map((b) => (b ? 1 : 0));
        const before = currentMacsOf(model, row);
        row[k] = 1;
        const after = currentMacsOf(model, row);
        expect(after.prunableMacs).toBeGreaterThanOrEqual(before.prunableMacs);
        expect(after.totalMacs).toBeGreaterThanOrEqual(before.totalMacs);
        expect(after.prunableMacs).toBeLessThanOrEqual(model.fullPrunableMacs);
      }),
      { seed: 7, numRuns: 50 },
    );
    const ones = currentMacsOf(model, new Array(L).fill(1));
    expect(ones.prunableMacs).toBe(model.fullPrunableMacs);
    expect(ones.totalMacs).toBe(model.totalMacs);
  });

  it('counts ungated blocks as fixed parts, every transformer block of a multi-block transformer included', () => {
    const mixed = parseUNetConfig({
      block_out_channels: [8, 16],
      norm_num_groups: 4,
      attention_head_dim: [2, 4],
      layers_per_block: 1,
      transformer_layers_per_block: [2, 1],
      cross_attention_dim: 8,
      down_block_types: ['CrossAttnDownBlock2D', 'DownBlock2DHalfGated'],
      mid_block_type: 'UNetMidBlock2DCrossAttnWidthGated',
      up_block_types: ['UpBlock2DHalfGated', 'CrossAttnUpBlock2D'],
      gated_ff: true,
      ff_gate_width: 4,
    });
    const m = macsModel(mixed, { latentHeight: 4, latentWidth: 4, textTokens: 3 });
    expect(m.layout.subBlocks.map((s) => s.name)).toEqual(['down_blocks.1.resnets.0', 'mid_block.resnets.0', 'mid_block.resnets.1', 'mid_block.attentions.0', 'up_blocks.0.resnets.0', 'up_blocks.0.resnets.1']);
    const g = macsModel(withAptpGating({ ...mixed, transformerLayersPerBlock: [1, 1] }), { latentHeight: 4, latentWidth: 4, textTokens: 3 });
    const one = g.subBlocks.find((s) => s.name === 'down_blocks.0.attentions.0')!;
    const perBlock = one.prunableMacs + 3 * 16 * 8; // attn1 + attn2 + ff + three LayerNorms (N·C each)
    expect(m.fixedParts['down_blocks.0.attentions.0']).toBe(one.totalMacs + perBlock);
    expect(m.fixedParts['up_blocks.1.resnets.0']).toBe(g.subBlocks.find((s) => s.name === 'up_blocks.1.resnets.0')!.totalMacs);
    expect(m.totalMacs).toBe(m.sumSubBlockTotal + m.sumFixedParts);
  });

  it('scales the attention core quadratically with tokens and counts text tokens only in to_k / to_v of attn2', () => {
    const a = macsModel(cfg, { latentHeight: 4, latentWidth: 4, textTokens: 3 });
    const b = macsModel(cfg, { latentHeight: 4, latentWidth: 4, textTokens: 5 });
    const t = (m: MacsModel) => m.subBlocks.find((s) => s.kind === 'transformer')!.moduleMacs;
    expect(t(b)['attn2.to_k']! - t(a)['attn2.to_k']!).toBe(2 * 8 * 8);
    expect(t(b)['attn2.total']! - t(a)['attn2.total']!).toBe(2 * 2 * 8 * 8);
    expect(t(b)['attn1.total']).toBe(t(a)['attn1.total']);
  });
});
