import { ConfigError } from '@aptp/core';
import { unetStructure } from '../config';
import type { BlockSpec, ResnetSpec, TransformerSpec, UNetConfig } from '../config';

/**
 * The architecture-vector layout of a gated UNet (APTP.md §3.4–3.5, golden/aptp/README.md §3): which entry of the
 * `[B, L]` architecture vector gates what. Plain data, shared by the gated forward, the MACs model, pruning, the
 * router (predictor heads), reports and exporters.
 *
 * Order (the reference's `get_structure()`): sub-blocks of down block 0, 1, …, the mid block, up block 0, 1, …;
 * inside a block **all ResNets first, then all transformers**. A ResNet owns one width gate (its `norm2` GroupNorm
 * groups); a transformer owns self-attention heads, cross-attention heads and (with `gated_ff`) feed-forward groups,
 * in that order. The vector is all width entries in sub-block order, followed by one entry per depth gate (numbered
 * d0, d1, … in sub-block order). SD 2.1 (`withAptpGating`): 38 sub-blocks, 70 width gates, 1606 + 14 = 1620.
 */

export type SubBlockKind = 'resnet' | 'transformer';

/** What a width gate switches (reference names: resnet_groups, self_attn_heads, cross_attn_heads, ff_groups). */
export type GateKind = 'resnetGroups' | 'selfAttnHeads' | 'crossAttnHeads' | 'ffGroups';

export interface WidthGate {
  /** Position among the width gates (0 … numWidthGates−1), = vector order. */
  index: number;
  /** diffusers module path of the gated module, e.g. `down_blocks.0.attentions.0.transformer_blocks.0.attn2`. */
  name: string;
  kind: GateKind;
  /** Name and index of the owning sub-block. */
  subBlock: string;
  subBlockIndex: number;
  /** Number of gate elements (GroupNorm groups, heads, FF groups). */
  width: number;
  /** Entries `[offset, end)` of the architecture vector. */
  offset: number;
  end: number;
  /** Channels one element controls: GroupNorm group size, head size, or FF inner units per group (of each half). */
  channelsPerUnit: number;
  /** `width · channelsPerUnit`: conv1 output channels, attention inner dim, or FF inner units (4C). */
  channels: number;
}

export interface DepthGate {
  /** Depth gate number k (d0 … d13 for SD 2.1), in sub-block order. */
  index: number;
  /** Entry of the architecture vector: `widthEntries + index`. */
  vectorIndex: number;
  subBlock: string;
  subBlockIndex: number;
  kind: SubBlockKind;
}

export interface SubBlock {
  index: number;
  /** diffusers module path, e.g. `up_blocks.1.resnets.2`. */
  name: string;
  kind: SubBlockKind;
  /** The block it belongs to and its position there. */
  block: 'down' | 'mid' | 'up';
  blockIndex: number;
  layer: number;
  /** Indices into `layout.widthGates` (1 for a ResNet; 2 or 3 for a transformer: self, cross[, ff]). */
  gates: number[];
  /** Entries `[start, end)` covered by its width gates. */
  widthOffsets: [number, number];
  /** Depth gate number, or null. */
  depthIndex: number | null;
  /** Vector entry of its depth gate, or null. */
  depthVectorIndex: number | null;
  /** The full (unpruned) module shapes (from `unetStructure`). Exactly one of the two is set. */
  resnet?: ResnetSpec;
  transformer?: TransformerSpec;
}

export interface ArchitectureLayout {
  subBlocks: SubBlock[];
  widthGates: WidthGate[];
  depthGates: DepthGate[];
  /** W: number of width entries. */
  widthEntries: number;
  /** Number of depth entries (= depth gates). */
  depthEntries: number;
  /** L = W + depth entries. */
  vectorLength: number;
  /** The reference's `get_structure()`: per sub-block its gate widths and its depth flag `[0]` / `[1]`. */
  structure: { width: number[][]; depth: number[][] };
}

function gatedTransformerWidths(cfg: UNetConfig, t: TransformerSpec): Array<[GateKind, number, number, string]> {
  if (t.layers !== 1) {
    throw new ConfigError('gated transformers must have exactly one transformer block (as the APTP reference)', {
      code: 'E_CONFIG_VALUE',
      field: 'transformer_layers_per_block',
      expected: 1,
      found: t.layers,
    });
  }
  const inner = 4 * t.channels;
  const out: Array<[GateKind, number, number, string]> = [
    ['selfAttnHeads', t.heads, t.headDim, `${t.name}.transformer_blocks.0.attn1`],
    ['crossAttnHeads', t.heads, t.headDim, `${t.name}.transformer_blocks.0.attn2`],
  ];
  if (cfg.gatedFf) {
    if (inner % cfg.ffGateWidth !== 0) {
      throw new ConfigError(`feed-forward inner width ${inner} of ${t.name} is not divisible by ff_gate_width`, {
        code: 'E_CONFIG_VALUE',
        field: 'ff_gate_width',
        expected: `a divisor of ${inner}`,
        found: cfg.ffGateWidth,
      });
    }
    out.push(['ffGroups', cfg.ffGateWidth, inner / cfg.ffGateWidth, `${t.name}.transformer_blocks.0.ff`]);
  }
  return out;
}

/**
 * Builds the layout of a UNet config. Blocks with gating `none` (plain diffusers blocks) own no gates; use
 * {@link withAptpGating} to gate a plain SD 2.1 config the way APTP does.
 */
export function architectureLayout(cfg: UNetConfig): ArchitectureLayout {
  const structure = unetStructure(cfg);
  const subBlocks: SubBlock[] = [];
  const widthGates: WidthGate[] = [];
  const depthOwners: number[] = [];
  let offset = 0;
  const addBlock = (b: BlockSpec) => {
    if (b.gating === 'none') return;
    const depthAllowed = b.gating === 'widthDepth' || b.gating === 'widthHalfDepth';
    const items: Array<{ kind: SubBlockKind; layer: number; spec: ResnetSpec | TransformerSpec }> = [
      ...b.resnets.map((r, layer) => ({ kind: 'resnet' as const, layer, spec: r })),
      ...b.attentions.map((t, layer) => ({ kind: 'transformer' as const, layer, spec: t })),
    ];
    for (const it of items) {
      const index = subBlocks.length;
      const start = offset;
      const gates: number[] = [];
      const widths: Array<[GateKind, number, number, string]> =
        it.kind === 'resnet'
          ? [['resnetGroups', cfg.normNumGroups, (it.spec as ResnetSpec).outChannels / cfg.normNumGroups, it.spec.name]]
          : gatedTransformerWidths(cfg, it.spec as TransformerSpec);
      for (const [kind, width, per, name] of widths) {
        gates.push(widthGates.length);
        widthGates.push({ index: widthGates.length, name, kind, subBlock: it.spec.name, subBlockIndex: index, width, offset, end: offset + width, channelsPerUnit: per, channels: width * per });
        offset += width;
      }
      const hasDepth = depthAllowed && it.spec.hasDepthGate;
      if (hasDepth) depthOwners.push(index);
      subBlocks.push({
        index,
        name: it.spec.name,
        kind: it.kind,
        block: b.kind,
        blockIndex: b.index,
        layer: it.layer,
        gates,
        widthOffsets: [start, offset],
        depthIndex: null,
        depthVectorIndex: null,
        ...(it.kind === 'resnet' ? { resnet: it.spec as ResnetSpec } : { transformer: it.spec as TransformerSpec }),
      });
    }
  };
  structure.blocks.forEach(addBlock);
  const widthEntries = offset;
  const depthGates: DepthGate[] = depthOwners.map((sbIndex, k) => {
    const sb = subBlocks[sbIndex]!;
    sb.depthIndex = k;
    sb.depthVectorIndex = widthEntries + k;
    return { index: k, vectorIndex: widthEntries + k, subBlock: sb.name, subBlockIndex: sbIndex, kind: sb.kind };
  });
  return {
    subBlocks,
    widthGates,
    depthGates,
    widthEntries,
    depthEntries: depthGates.length,
    vectorLength: widthEntries + depthGates.length,
    structure: {
      width: subBlocks.map((sb) => sb.gates.map((g) => widthGates[g]!.width)),
      depth: subBlocks.map((sb) => [sb.depthIndex === null ? 0 : 1]),
    },
  };
}

/**
 * The config APTP trains on a plain UNet: every down/up block "half-gated" (width gates everywhere, depth gates on
 * the last ResNet and last transformer), the mid block width-gated, feed-forward gates with `ffGateWidth` groups
 * (reference default 32; APTP.md §1.3 `gated_ff: true, ff_gate_width: 32`). Blocks that already carry a gating keep it.
 */
export function withAptpGating(cfg: UNetConfig, ffGateWidth = cfg.gatedFf ? cfg.ffGateWidth : 32): UNetConfig {
  return {
    ...cfg,
    downBlockGating: cfg.downBlockGating.map((g) => (g === 'none' ? 'widthHalfDepth' : g)),
    midBlockGating: cfg.midBlockGating === 'none' ? 'width' : cfg.midBlockGating,
    upBlockGating: cfg.upBlockGating.map((g) => (g === 'none' ? 'widthHalfDepth' : g)),
    gatedFf: true,
    ffGateWidth,
  };
}

/**
 * The layout APTP uses for a config: its own gating when it has any gates (a reference gated config), else the
 * {@link withAptpGating} layout of the plain config (e.g. SD 2.1's `unet/config.json` → 1620 entries).
 */
export function aptpLayout(cfg: UNetConfig): ArchitectureLayout {
  const own = architectureLayout(cfg);
  return own.vectorLength > 0 ? own : architectureLayout(withAptpGating(cfg));
}

/** The sub-block with this module path, or undefined. */
export function findSubBlock(layout: ArchitectureLayout, name: string): SubBlock | undefined {
  return layout.subBlocks.find((sb) => sb.name === name);
}

/** The width gates of a sub-block, in vector order. */
export function subBlockGates(layout: ArchitectureLayout, sb: SubBlock): WidthGate[] {
  return sb.gates.map((g) => layout.widthGates[g]!);
}

/** The width gate of `kind` in a sub-block, or undefined (e.g. `ffGroups` without `gated_ff`). */
export function subBlockGate(layout: ArchitectureLayout, sb: SubBlock, kind: GateKind): WidthGate | undefined {
  return sb.gates.map((g) => layout.widthGates[g]!).find((g) => g.kind === kind);
}
