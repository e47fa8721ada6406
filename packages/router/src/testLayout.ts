import { ArchitectureLayout, architectureLayout, parseUNetConfig } from '@aptp/unet-gating';

/**
 * Test fixture (not exported by the package): the gate layout of a small UNet with the SD 2.1 block structure and
 * tiny widths (L = 212 + 14), built by @aptp/unet-gating.
 */
export function tinyLayout(): ArchitectureLayout {
  return architectureLayout(
    parseUNetConfig({
      _class_name: 'UNet2DConditionModel',
      sample_size: 8,
      in_channels: 4,
      out_channels: 4,
      down_block_types: ['CrossAttnDownBlock2DHalfGated', 'CrossAttnDownBlock2DHalfGated', 'CrossAttnDownBlock2DHalfGated', 'DownBlock2DHalfGated'],
      mid_block_type: 'UNetMidBlock2DCrossAttnWidthGated',
      up_block_types: ['UpBlock2DHalfGated', 'CrossAttnUpBlock2DHalfGated', 'CrossAttnUpBlock2DHalfGated', 'CrossAttnUpBlock2DHalfGated'],
      block_out_channels: [8, 16, 16, 16],
      layers_per_block: 2,
      attention_head_dim: [2, 4, 4, 4],
      cross_attention_dim: 8,
      norm_num_groups: 4,
      use_linear_projection: true,
      gated_ff: true,
      ff_gate_width: 4,
    }),
  );
}
