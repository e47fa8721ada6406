import * as tf from '@tensorflow/tfjs-core';
import { ShapeError } from '@aptp/core';
import { layoutConstants } from './gateGroups';
import { hardStraightThrough } from '@aptp/unet-gating';
import type { ArchitectureLayout } from '@aptp/unet-gating';

/**
 * `width_depth_normalize` N(s) (APTP.md §2.5, golden aptp/README.md §6.5; reference
 * `StructureVectorQuantizer.width_depth_normalize`), row-wise on soft gates `s` `[R, L]`:
 *   1. start from hard(s) (straight-through);
 *   2. for each depth-gated sub-block, replace its width entries by the **soft** product `s_width · s_depth`;
 *   3. multiply every entry by √(float32(1/w)), w = width of its gate (depth entries ×1; depth entries stay hard).
 * `resource_aware_normalization` (disabled in every reference config) is not supported.
 *
 * Gradients as the reference: straight-through for the hard entries, product rule for the replaced ones.
 */
export function widthDepthNormalize(s: tf.Tensor2D, layout: ArchitectureLayout): tf.Tensor2D {
  const L = layout.vectorLength;
  const W = layout.widthEntries;
  const D = layout.depthEntries;
  if (s.rank !== 2 || s.shape[1] !== L) throw new ShapeError('wrong shape', { field: 'gates', expected: `[R, ${L}]`, found: s.shape });
  const c = layoutConstants(layout);
  return tf.tidy(() => {
    const R = s.shape[0];
    const hard = hardStraightThrough(s) as tf.Tensor2D;
    const sw = tf.slice(s, [0, 0], [R, W]);
    const sd = tf.slice(s, [0, W], [R, D]);
    const mask = tf.tensor1d(c.depthGatedWidth); // [W]
    // s_depth of the owning sub-block, spread over its width entries (0 outside depth-gated sub-blocks).
    const depthSpread = tf.matMul(sd, tf.tensor2d(c.depthToWidth, [D, W])); // [R, W]
    const width = tf.add(tf.mul(tf.slice(hard, [0, 0], [R, W]), tf.sub(1, mask)), tf.mul(sw, depthSpread));
    const out = tf.concat([width, tf.slice(hard, [0, W], [R, D])], 1);
    return tf.mul(out, tf.tensor1d(c.sqrtTemplate)) as tf.Tensor2D;
  });
}

/** Rows divided by their L2 norm (no epsilon, as the reference's `u / u.norm(dim=-1, keepdim=True)`). */
export function normalizeRows(x: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => tf.div(x, tf.sqrt(tf.sum(tf.square(x), 1, true))) as tf.Tensor2D);
}

/**
 * Cosine similarities `[R, K]` between N(a) rows and N(codes) rows (APTP.md §2.5): both sides width-depth
 * normalised, row L2-normalised, then `Â Ĉᵀ`.
 */
export function cosineSimilarity(aNormalized: tf.Tensor2D, codesNormalized: tf.Tensor2D): tf.Tensor2D {
  if (aNormalized.shape[1] !== codesNormalized.shape[1]) {
    throw new ShapeError('vector lengths differ', { field: 'codes', expected: `[K, ${aNormalized.shape[1]}]`, found: codesNormalized.shape });
  }
  return tf.tidy(() => tf.matMul(normalizeRows(aNormalized), tf.transpose(normalizeRows(codesNormalized))) as tf.Tensor2D);
}
