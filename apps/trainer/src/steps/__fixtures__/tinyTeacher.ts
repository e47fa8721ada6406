/**
 * Test fixture: a tiny teacher-shaped UNet (both block kinds, a GEGLU transformer with split weights, linear
 * projections, the pooled-text `add_embedding` of the default teacher).
 */
export const TINY_TEACHER_UNET = {
  sample_size: 16,
  in_channels: 3,
  out_channels: 3,
  block_out_channels: [8, 16],
  down_block_types: ['DownBlock2D', 'CrossAttnDownBlock2D'],
  up_block_types: ['CrossAttnUpBlock2D', 'UpBlock2D'],
  layers_per_block: 1,
  attention_head_dim: [1, 2],
  cross_attention_dim: 8,
  norm_num_groups: 4,
  use_linear_projection: true,
  gated_ff: true,
  ff_gate_width: 4,
  addition_embed_type: 'text',
  addition_embed_type_num_heads: 2,
};
