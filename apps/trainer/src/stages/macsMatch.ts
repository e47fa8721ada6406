import * as tf from '@tensorflow/tfjs-core';
import { ConfigError } from '@aptp/core';
import { gumbelSigmoid, type GumbelSigmoidOptions } from '@aptp/router';
import { currentMacsOf, type ArchitectureLayout, type MacsModel } from '@aptp/unet-gating';

/**
 * The single-architecture baseline at a given MACs ratio (used to compare it with APTP at the same average MACs).
 *
 * The reference exports the learned architecture as the noise-free Gumbel-sigmoid sample, gates σ((ℓ + base)/T) ≥ ½.
 * Training drives the *noisy* hard samples to the resource target, so the noise-free one lands wherever the logits
 * near the threshold fall. Here the noise is a constant offset o for every entry instead of 0: every gate value
 * σ((ℓ + o + base)/T) (width and depth alike) grows with o, so the kept width per gate (at least one element under
 * the non-zero rule) and the kept depth gates, hence the MACs, are non-decreasing in o. Bisection on o finds the
 * hard architecture whose MACs ratio (total MACs / the teacher's) is closest to the target; o = 0 is the reference.
 */
export interface MacsMatchedArchitecture {
  /** The gate values at the chosen offset `[1, L]` (the caller owns it). */
  gates: tf.Tensor2D;
  offset: number;
  macsRatio: number;
}

const OFFSET_RANGE = 40;
const BISECTION_STEPS = 60;

export function macsMatchedArchitecture(logits: tf.Tensor2D, layout: ArchitectureLayout, options: GumbelSigmoidOptions, macs: MacsModel, targetRatio: number): MacsMatchedArchitecture {
  if (!(targetRatio > 0 && targetRatio <= 1)) throw new ConfigError('the MACs ratio must be in (0, 1]', { field: 'singleArchMacsRatio', expected: '0 < ratio ≤ 1', found: targetRatio });
  if (logits.shape[0] !== 1) throw new ConfigError('one architecture row expected', { field: 'logits', expected: [1, layout.vectorLength], found: logits.shape });
  const gatesAt = (offset: number): tf.Tensor2D => tf.tidy(() => gumbelSigmoid(logits, tf.fill([1, layout.vectorLength], offset) as tf.Tensor2D, layout, options));
  const ratioAt = (offset: number): number => {
    const g = gatesAt(offset);
    try {
      const row = Array.from(g.dataSync(), (x) => (x >= 0.5 ? 1 : 0));
      return currentMacsOf(macs, row).totalMacs / macs.totalMacs;
    } finally {
      g.dispose();
    }
  };
  let lo = -OFFSET_RANGE;
  let hi = OFFSET_RANGE;
  let rLo = ratioAt(lo);
  let rHi = ratioAt(hi);
  if (targetRatio > rLo && targetRatio < rHi) {
    // invariant: ratio(lo) < target ≤ ratio(hi)
    for (let i = 0; i < BISECTION_STEPS; i++) {
      const mid = (lo + hi) / 2;
      const r = ratioAt(mid);
      if (r < targetRatio) [lo, rLo] = [mid, r];
      else [hi, rHi] = [mid, r];
    }
  }
  const offset = Math.abs(rLo - targetRatio) < Math.abs(rHi - targetRatio) ? lo : hi;
  return { gates: gatesAt(offset), offset, macsRatio: offset === lo ? rLo : rHi };
}
