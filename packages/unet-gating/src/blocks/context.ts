import type { Ops } from '@aptp/core';
import type { UNetConfig } from '../config';
import type { BlockGates, GatePlacement } from '../gates/apply';

/** What an intermediate tensor is, so a capture hook can convert it (feature maps are in the internal layout). */
export type CaptureKind = 'map' | 'tokens' | 'vector';

/** Receives intermediates under their golden/diffusers module names (tests compare them with io.safetensors). */
export type CaptureFn<T> = (name: string, value: T, kind: CaptureKind) => void;

/** Per-forward state shared by all blocks. */
export interface ForwardContext<T> {
  o: Ops<T>;
  /** `silu(temb)` `[B, T]`: every ResNet's time projection input (diffusers applies the silu inside each ResNet). */
  tembAct: T;
  /** Encoder hidden states `[B, S, D]`. */
  context: T;
  /** Gates per sub-block module path (absent: plain forward). */
  gates?: Readonly<Record<string, BlockGates<T>>>;
  placement: GatePlacement;
  capture?: CaptureFn<T>;
}

/** Load-time options shared by all blocks. */
export interface LoadContext {
  cfg: UNetConfig;
  /** Pruned expert: inner widths are read from the weights, and absent ResNets/transformers are identities. */
  pruned: boolean;
  /** Feed-forward gate elements per transformer of the gate layout in use (`ff_gate_width`). */
  ffGateWidth: number;
}

export function gatesOf<T>(ctx: ForwardContext<T>, name: string): BlockGates<T> | undefined {
  return ctx.gates?.[name];
}
