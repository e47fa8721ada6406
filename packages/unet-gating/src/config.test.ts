import * as path from 'node:path';
import { ConfigError } from '@aptp/core';
import { describeGolden, readGoldenJson } from '@aptp/core/testing';
import { parseUNetConfig, readUNetConfig, unetStructure, upBlockHeads, midBlockHeads, downBlockHeads } from './config';

/** SD 2.1's unet/config.json (stabilityai/stable-diffusion-2-1, written by diffusers 0.10). */
const SD21 = {
  _class_name: 'UNet2DConditionModel',
  _diffusers_version: '0.10.0.dev0',
  act_fn: 'silu',
  attention_head_dim: [5, 10, 20, 20],
  block_out_channels: [320, 640, 1280, 1280],
  center_input_sample: false,
  cross_attention_dim: 1024,
  down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
  downsample_padding: 1,
  dual_cross_attention: false,
  flip_sin_to_cos: true,
  freq_shift: 0,
  in_channels: 4,
  layers_per_block: 2,
  mid_block_scale_factor: 1,
  norm_eps: 1e-5,
  norm_num_groups: 32,
  num_class_embeds: null,
  only_cross_attention: false,
  out_channels: 4,
  sample_size: 96,
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
  use_linear_projection: true,
  upcast_attention: true,
};

describe('parseUNetConfig', () => {
  it('maps SD 2.1: heads from attention_head_dim, head size 64 everywhere', () => {
    const cfg = parseUNetConfig(SD21, 'sd21/config.json');
    expect(cfg.attentionHeads).toEqual([5, 10, 20, 20]);
    expect(cfg.timeEmbedDim).toBe(1280);
    const s = unetStructure(cfg);
    const all = s.blocks.flatMap((b) => b.attentions);
    expect(all.length).toBe(16);
    expect(new Set(all.map((a) => a.headDim))).toEqual(new Set([64]));
    expect(s.up.map((b) => b.resnets.length)).toEqual([3, 3, 3, 3]);
    // up block 1: resnets see 1280+1280, 1280+1280, 1280+640 channels
    expect(s.up[1]!.resnets.map((r) => r.inChannels)).toEqual([2560, 2560, 1920]);
    expect(s.up[3]!.resnets.map((r) => r.inChannels)).toEqual([640 + 320, 320 + 320, 320 + 320]);
    expect(s.blocks.flatMap((b) => b.resnets).some((r) => r.hasDepthGate)).toBe(false);
  });

  it('reverses heads for up blocks and uses the last entry for mid', () => {
    const cfg = parseUNetConfig({ ...SD21, attention_head_dim: [2, 4, 8, 8], block_out_channels: [16, 32, 48, 48], norm_num_groups: 8 });
    expect([0, 1, 2, 3].map((i) => upBlockHeads(cfg, i))).toEqual([8, 8, 4, 2]);
    expect(midBlockHeads(cfg)).toBe(8);
    expect(downBlockHeads(cfg, 1)).toBe(4);
  });

  it('rejects unknown fields and unsupported values, naming field and value', () => {
    expect(() => parseUNetConfig({ ...SD21, foo_bar: 3 }, 'x.json')).toThrow(/x\.json: foo_bar: unsupported config field/);
    expect(() => parseUNetConfig({ ...SD21, act_fn: 'gelu' }, 'x.json')).toThrow(/act_fn.*found gelu/);
    expect(() => parseUNetConfig({ ...SD21, class_embed_type: 'timestep' })).toThrow(ConfigError);
    expect(() => parseUNetConfig({ ...SD21, down_block_types: ['AttnDownBlock2D', 'DownBlock2D', 'DownBlock2D', 'DownBlock2D'] })).toThrow(
      /down_block_types\.0: unsupported block type.*found AttnDownBlock2D/,
    );
    expect(() => parseUNetConfig({ ...SD21, resnet_time_scale_shift: 'ada_group' })).toThrow(/resnet_time_scale_shift.*found ada_group/);
    expect(parseUNetConfig({ ...SD21, resnet_time_scale_shift: 'scale_shift' }).resnetTimeScaleShift).toBe('scale_shift');
    expect(parseUNetConfig(SD21).resnetTimeScaleShift).toBe('default');
    expect(() => parseUNetConfig({ ...SD21, attention_head_dim: [5, 10, 20] })).toThrow(/attention_head_dim/);
    expect(() => parseUNetConfig({ ...SD21, attention_head_dim: 7 })).toThrow(/attention_head_dim.*found 7/);
    expect(() => parseUNetConfig({ ...SD21, _anything: { nested: true }, _class_name: 'X' })).not.toThrow();
  });

  it('num_attention_heads, when given, is the number of heads', () => {
    const cfg = parseUNetConfig({ ...SD21, num_attention_heads: 10, attention_head_dim: 64 });
    expect(cfg.attentionHeads).toEqual([10, 10, 10, 10]);
  });
});

describeGolden('aptp', 'parseUNetConfig on the golden configs', (dir) => {
  it('maps the APTP gated config to plain blocks plus gating', () => {
    const cfg = readUNetConfig(path.join(dir, 'config.json'));
    expect(cfg.downBlockTypes).toEqual(['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D']);
    expect(cfg.downBlockGating).toEqual(['widthHalfDepth', 'widthHalfDepth', 'widthHalfDepth', 'widthHalfDepth']);
    expect(cfg.midBlockType).toBe('UNetMidBlock2DCrossAttn');
    expect(cfg.midBlockGating).toBe('width');
    expect(cfg.upBlockGating).toEqual(['widthHalfDepth', 'widthHalfDepth', 'widthHalfDepth', 'widthHalfDepth']);
    expect(cfg.gatedFf).toBe(true);
    expect(cfg.ffGateWidth).toBe(8);
    const s = unetStructure(cfg);
    // 38 sub-blocks and 14 depth gates (golden/aptp/README.md §3)
    const subBlocks = s.blocks.flatMap((b) => [...b.resnets, ...b.attentions]);
    expect(subBlocks.length).toBe(38);
    expect(subBlocks.filter((x) => x.hasDepthGate).length).toBe(14);
    const st = readGoldenJson<{ sub_blocks: { name: string; has_depth_gate: boolean }[] }>(path.join(dir, 'structure.json'));
    expect(subBlocks.map((x) => x.name)).toEqual(st.sub_blocks.map((x) => x.name));
    expect(subBlocks.map((x) => x.hasDepthGate)).toEqual(st.sub_blocks.map((x) => x.has_depth_gate));
  });
});

describeGolden('unet-tiny-b', 'parseUNetConfig on unet-tiny-b', (dir) => {
  it('int attention_head_dim applies to every block', () => {
    const cfg = readUNetConfig(path.join(dir, 'config.json'));
    expect(cfg.attentionHeads).toEqual([4, 4, 4]);
    const s = unetStructure(cfg);
    expect(s.mid.attentions[0]!.headDim).toBe(8);
    expect(s.up[1]!.attentions[0]!.headDim).toBe(6);
    expect(s.up[2]!.resnets.map((r) => r.inChannels)).toEqual([24 + 16, 16 + 16]);
  });
});
