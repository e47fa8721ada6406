import * as path from 'node:path';
import fc from 'fast-check';
import { ConfigError } from '@aptp/core';
import { describeGolden, readGoldenJson } from '@aptp/core/testing';
import { parseUNetConfig, readUNetConfig } from '../config';
import { architectureLayout, findSubBlock, subBlockGate, withAptpGating } from './layout';
import type { GateKind } from './layout';

/** SD 2.1 unet/config.json (plain diffusers block types). */
const SD21_CONFIG = {
  attention_head_dim: [5, 10, 20, 20],
  block_out_channels: [320, 640, 1280, 1280],
  cross_attention_dim: 1024,
  down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
  in_channels: 4,
  layers_per_block: 2,
  norm_num_groups: 32,
  out_channels: 4,
  sample_size: 96,
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
  use_linear_projection: true,
  upcast_attention: true,
};

const KIND: Record<string, GateKind> = { resnet_groups: 'resnetGroups', self_attn_heads: 'selfAttnHeads', cross_attn_heads: 'crossAttnHeads', ff_groups: 'ffGroups' };

interface GoldenStructure {
  structure: { width: number[][]; depth: number[][] };
  num_sub_blocks: number;
  num_width_gates: number;
  num_depth_gates: number;
  width_entries: number;
  depth_entries: number;
  vector_length: number;
  sub_blocks: Array<{ index: number; name: string; kind: string; widths: number[]; width_offsets: [number, number]; has_depth_gate: boolean; depth_index: number | null; depth_vector_index: number | null }>;
  gates: Array<{ index: number; sub_block: string; sub_block_index: number; kind: string; width: number; offsets: [number, number]; channels_per_gate: number }>;
  depth_gates: Array<{ index: number; vector_index: number; sub_block: string; kind: string }>;
}

describeGolden('aptp', 'architecture layout vs the reference (tiny gated UNet)', (dir) => {
  const golden = readGoldenJson<GoldenStructure>(path.join(dir, 'structure.json'));
  const layout = architectureLayout(readUNetConfig(path.join(dir, 'config.json')));

  it('has the reference counts and get_structure()', () => {
    expect(layout.subBlocks.length).toBe(golden.num_sub_blocks);
    expect(layout.widthGates.length).toBe(golden.num_width_gates);
    expect(layout.depthGates.length).toBe(golden.num_depth_gates);
    expect(layout.widthEntries).toBe(golden.width_entries);
    expect(layout.depthEntries).toBe(golden.depth_entries);
    expect(layout.vectorLength).toBe(golden.vector_length);
    expect(layout.structure).toEqual(golden.structure);
  });

  it('matches every sub-block entry', () => {
    golden.sub_blocks.forEach((g, i) => {
      const sb = layout.subBlocks[i]!;
      expect({ index: sb.index, name: sb.name, kind: sb.kind, widths: sb.gates.map((k) => layout.widthGates[k]!.width), offsets: sb.widthOffsets, depth: sb.depthIndex, depthVector: sb.depthVectorIndex }).toEqual({
        index: g.index,
        name: g.name,
        kind: g.kind,
        widths: g.widths,
        offsets: g.width_offsets,
        depth: g.depth_index,
        depthVector: g.depth_vector_index,
      });
      expect(sb.depthIndex !== null).toBe(g.has_depth_gate);
    });
  });

  it('matches every width gate and depth gate entry', () => {
    golden.gates.forEach((g, i) => {
      const wg = layout.widthGates[i]!;
      expect({ index: wg.index, sub: wg.subBlock, sbi: wg.subBlockIndex, kind: wg.kind, width: wg.width, offsets: [wg.offset, wg.end], per: wg.channelsPerUnit }).toEqual({
        index: g.index,
        sub: g.sub_block,
        sbi: g.sub_block_index,
        kind: KIND[g.kind],
        width: g.width,
        offsets: g.offsets,
        per: g.channels_per_gate,
      });
    });
    golden.depth_gates.forEach((d, i) => {
      const dg = layout.depthGates[i]!;
      expect({ index: dg.index, v: dg.vectorIndex, sub: dg.subBlock, kind: dg.kind }).toEqual({ index: d.index, v: d.vector_index, sub: d.sub_block, kind: d.kind });
    });
  });
});

describe('architecture layout of SD 2.1 (APTP.md §3.5)', () => {
  const layout = architectureLayout(withAptpGating(parseUNetConfig(SD21_CONFIG, 'sd21/config.json')));

  it('gives 1606 width + 14 depth = 1620 entries in 38 sub-blocks and 70 width gates', () => {
    expect([layout.widthEntries, layout.depthEntries, layout.vectorLength]).toEqual([1606, 14, 1620]);
    expect(layout.subBlocks.length).toBe(38);
    expect(layout.widthGates.length).toBe(70);
  });

  it('puts the gates at the offsets of the APTP.md table', () => {
    const range = (name: string): [number, number] => findSubBlock(layout, name)!.widthOffsets;
    expect(range('down_blocks.0.resnets.0')).toEqual([0, 32]);
    expect(range('down_blocks.0.attentions.0')).toEqual([64, 106]);
    expect(range('down_blocks.1.attentions.1')).toEqual([264, 316]);
    expect(range('down_blocks.2.attentions.0')).toEqual([380, 452]);
    expect(range('mid_block.resnets.0')).toEqual([588, 620]);
    expect(range('mid_block.attentions.0')).toEqual([652, 724]);
    expect(range('up_blocks.0.resnets.0')).toEqual([724, 756]);
    expect(range('up_blocks.1.attentions.0')).toEqual([916, 988]);
    expect(range('up_blocks.2.resnets.0')).toEqual([1132, 1164]);
    expect(range('up_blocks.3.attentions.2')).toEqual([1564, 1606]);
    const ff = subBlockGate(layout, findSubBlock(layout, 'down_blocks.2.attentions.0')!, 'ffGroups')!;
    expect([ff.width, ff.channelsPerUnit, ff.name]).toEqual([32, 160, 'down_blocks.2.attentions.0.transformer_blocks.0.ff']);
    const rg = subBlockGate(layout, findSubBlock(layout, 'down_blocks.1.resnets.0')!, 'resnetGroups')!;
    expect(rg.channelsPerUnit).toBe(20);
    expect(layout.widthGates.filter((g) => g.kind === 'selfAttnHeads').every((g) => g.channelsPerUnit === 64)).toBe(true);
    expect(layout.depthGates.map((d) => `${d.vectorIndex}:${d.subBlock}`)).toEqual([
      '1606:down_blocks.0.resnets.1',
      '1607:down_blocks.0.attentions.1',
      '1608:down_blocks.1.resnets.1',
      '1609:down_blocks.1.attentions.1',
      '1610:down_blocks.2.resnets.1',
      '1611:down_blocks.2.attentions.1',
      '1612:down_blocks.3.resnets.1',
      '1613:up_blocks.0.resnets.2',
      '1614:up_blocks.1.resnets.2',
      '1615:up_blocks.1.attentions.2',
      '1616:up_blocks.2.resnets.2',
      '1617:up_blocks.2.attentions.2',
      '1618:up_blocks.3.resnets.2',
      '1619:up_blocks.3.attentions.2',
    ]);
  });

  it('gives the reference gated config the same layout as the plain config with APTP gating', () => {
    const gated = parseUNetConfig({
      ...SD21_CONFIG,
      down_block_types: ['CrossAttnDownBlock2DHalfGated', 'CrossAttnDownBlock2DHalfGated', 'CrossAttnDownBlock2DHalfGated', 'DownBlock2DHalfGated'],
      mid_block_type: 'UNetMidBlock2DCrossAttnWidthGated',
      up_block_types: ['UpBlock2DHalfGated', 'CrossAttnUpBlock2DHalfGated', 'CrossAttnUpBlock2DHalfGated', 'CrossAttnUpBlock2DHalfGated'],
      gated_ff: true,
      ff_gate_width: 32,
    });
    expect(architectureLayout(gated)).toEqual(layout);
  });

  it('plain blocks own no gates; gating every sub-block gives depth gates everywhere but in the mid block', () => {
    expect(architectureLayout(parseUNetConfig(SD21_CONFIG)).vectorLength).toBe(0);
    const full = architectureLayout(
      parseUNetConfig({
        ...SD21_CONFIG,
        down_block_types: ['CrossAttnDownBlock2DGated', 'CrossAttnDownBlock2DGated', 'CrossAttnDownBlock2DGated', 'DownBlock2DGated'],
        mid_block_type: 'UNetMidBlock2DCrossAttnWidthGated',
        up_block_types: ['UpBlock2DGated', 'CrossAttnUpBlock2DGated', 'CrossAttnUpBlock2DGated', 'CrossAttnUpBlock2DGated'],
        gated_ff: false,
      }),
    );
    expect(full.depthEntries).toBe(38 - 3);
    // without gated_ff a transformer owns self + cross head gates only
    expect(full.structure.width[2]).toEqual([5, 5]);
  });

  it('rejects an FF gate width that does not divide 4C', () => {
    expect(() => architectureLayout(withAptpGating(parseUNetConfig(SD21_CONFIG), 33))).toThrow(ConfigError);
    expect(() => architectureLayout(withAptpGating(parseUNetConfig(SD21_CONFIG), 33))).toThrow(/ff_gate_width/);
  });
});

describe('architecture layout properties', () => {
  it('offsets tile [0, W) contiguously, depth entries follow, widths x units = channels (random configs)', () => {
    const arb = fc.record({
      n: fc.integer({ min: 1, max: 4 }),
      groups: fc.constantFrom(1, 2, 4),
      mult: fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 4, maxLength: 4 }),
      heads: fc.array(fc.constantFrom(1, 2, 4), { minLength: 4, maxLength: 4 }),
      layers: fc.integer({ min: 1, max: 3 }),
      cross: fc.array(fc.boolean(), { minLength: 4, maxLength: 4 }),
      ffw: fc.constantFrom(1, 2, 4, 8),
    });
    fc.assert(
      fc.property(arb, (p) => {
        const channels = p.mult.slice(0, p.n).map((m) => m * 8);
        const cfg = withAptpGating(
          parseUNetConfig({
            block_out_channels: channels,
            norm_num_groups: p.groups,
            attention_head_dim: p.heads.slice(0, p.n),
            layers_per_block: p.layers,
            cross_attention_dim: 8,
            down_block_types: p.cross.slice(0, p.n).map((c) => (c ? 'CrossAttnDownBlock2D' : 'DownBlock2D')),
            up_block_types: p.cross.slice(0, p.n).reverse().map((c) => (c ? 'CrossAttnUpBlock2D' : 'UpBlock2D')),
          }),
          p.ffw,
        );
        const layout = architectureLayout(cfg);
        let expectOffset = 0;
        for (const g of layout.widthGates) {
          expect(g.offset).toBe(expectOffset);
          expect(g.end - g.offset).toBe(g.width);
          expectOffset = g.end;
        }
        expect(expectOffset).toBe(layout.widthEntries);
        expect(layout.depthGates.map((d) => d.vectorIndex)).toEqual(layout.depthGates.map((_, k) => layout.widthEntries + k));
        expect(layout.vectorLength).toBe(layout.widthEntries + layout.depthEntries);
        // depth gates: 2 per cross-attention down/up block (last ResNet + last transformer), 1 per plain one
        const crossCount = p.cross.slice(0, p.n).filter(Boolean).length;
        expect(layout.depthEntries).toBe(2 * (2 * crossCount + (p.n - crossCount)));
        for (const sb of layout.subBlocks) {
          for (const gi of sb.gates) {
            const g = layout.widthGates[gi]!;
            if (g.kind === 'resnetGroups') expect(g.channels).toBe(sb.resnet!.outChannels);
            if (g.kind === 'selfAttnHeads' || g.kind === 'crossAttnHeads') expect(g.channels).toBe(sb.transformer!.channels);
            if (g.kind === 'ffGroups') expect(g.channels).toBe(4 * sb.transformer!.channels);
          }
        }
      }),
      { seed: 4242, numRuns: 50 },
    );
  });
});
