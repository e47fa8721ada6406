import type { ArchitectureLayout } from '@aptp/unet-gating';

/**
 * Constant matrices the router derives from `@aptp/unet-gating`'s {@link ArchitectureLayout} (the one source of the
 * gate offsets, APTP.md §3.5): gate membership for the non-zero rule, the depth-gate → width-entries map and the
 * `√(1/w)` template of `width_depth_normalize`. Host arrays, cached per layout object.
 */
export interface LayoutConstants {
  /** `[W, G]`: 1 where width entry i belongs to width gate g. */
  membership: Float32Array;
  /** `[G, W]`: the transpose of `membership`. */
  membershipT: Float32Array;
  /** `[W]`: 1 at the first entry of every width gate. */
  firstEntry: Float32Array;
  /** `[L]`: √(float32(1/w)) of the gate each entry belongs to, 1 for depth entries (the reference's template). */
  sqrtTemplate: Float32Array;
  /** `[D, W]`: 1 where width entry i belongs to the sub-block owning depth gate k. */
  depthToWidth: Float32Array;
  /** `[W]`: 1 where a width entry belongs to a depth-gated sub-block. */
  depthGatedWidth: Float32Array;
}

const cache = new WeakMap<ArchitectureLayout, LayoutConstants>();

export function layoutConstants(layout: ArchitectureLayout): LayoutConstants {
  const hit = cache.get(layout);
  if (hit) return hit;
  const W = layout.widthEntries;
  const G = layout.widthGates.length;
  const D = layout.depthEntries;
  const membership = new Float32Array(W * G);
  const membershipT = new Float32Array(G * W);
  const firstEntry = new Float32Array(W);
  const sqrtTemplate = new Float32Array(layout.vectorLength).fill(1);
  layout.widthGates.forEach((g, gi) => {
    firstEntry[g.offset] = 1;
    const s = Math.fround(Math.sqrt(Math.fround(1 / g.width)));
    for (let i = g.offset; i < g.end; i++) {
      membership[i * G + gi] = 1;
      membershipT[gi * W + i] = 1;
      sqrtTemplate[i] = s;
    }
  });
  const depthToWidth = new Float32Array(D * W);
  const depthGatedWidth = new Float32Array(W);
  layout.depthGates.forEach((d, k) => {
    const [start, end] = layout.subBlocks[d.subBlockIndex]!.widthOffsets;
    for (let i = start; i < end; i++) {
      depthToWidth[k * W + i] = 1;
      depthGatedWidth[i] = 1;
    }
  });
  const c: LayoutConstants = { membership, membershipT, firstEntry, sqrtTemplate, depthToWidth, depthGatedWidth };
  cache.set(layout, c);
  return c;
}
