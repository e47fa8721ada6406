/**
 * CLIP score (APTP.md §8.3): per (image, caption) pair, `weight · max(cos(image, text), 0)` with weight 100
 * (CLIP's logit_scale.exp()); the score of a set is the mean of the clamped per-pair scores. The other common
 * convention, clamping after averaging (`max(100 · mean cos, 0)`), is reported as `clampOfMeanScore`. Float64.
 */
import { NumericError, ShapeError } from '@aptp/core';
import type { FeatureMatrix } from './frechet';

export interface ClipScoreResult {
  /** cos(imageᵢ, textᵢ), [n] */
  cosine: Float64Array;
  /** weight · max(cosᵢ, 0), [n] */
  perPair: Float64Array;
  /** Mean of `perPair` (the reported CLIP score). */
  score: number;
  /** max(weight · mean(cos), 0) */
  clampOfMeanScore: number;
}

/** Cosine similarity of two vectors (float64); 0 when either is the zero vector. */
export function cosineSimilarity(a: ArrayLike<number>, b: ArrayLike<number>, offsetA = 0, offsetB = 0, dim = a.length): number {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let c = 0; c < dim; c++) {
    const x = a[offsetA + c]!;
    const y = b[offsetB + c]!;
    ab += x * y;
    aa += x * x;
    bb += y * y;
  }
  const den = Math.sqrt(aa) * Math.sqrt(bb);
  return den > 0 ? ab / den : 0;
}

/** CLIP score of row-paired image and text embeddings ([n, d] each). */
export function clipScore(imageEmbeds: FeatureMatrix, textEmbeds: FeatureMatrix, weight = 100): ClipScoreResult {
  const { rows: n, dim } = imageEmbeds;
  if (textEmbeds.rows !== n || textEmbeds.dim !== dim) {
    throw new ShapeError('image and text embeddings must pair row by row', { field: 'textEmbeds', expected: `[${n}, ${dim}]`, found: `[${textEmbeds.rows}, ${textEmbeds.dim}]` });
  }
  if (imageEmbeds.data.length !== n * dim || textEmbeds.data.length !== n * dim) {
    throw new ShapeError('embedding data does not match its dims', { field: 'embeds', expected: n * dim, found: [imageEmbeds.data.length, textEmbeds.data.length] });
  }
  if (n === 0) throw new ShapeError('no pairs to score', { field: 'rows', expected: '>= 1', found: 0 });
  const cosine = new Float64Array(n);
  const perPair = new Float64Array(n);
  let sumCos = 0;
  let sumScore = 0;
  for (let i = 0; i < n; i++) {
    const c = cosineSimilarity(imageEmbeds.data, textEmbeds.data, i * dim, i * dim, dim);
    if (!Number.isFinite(c)) throw new NumericError('non-finite embedding', { field: `pair ${i}`, found: c });
    cosine[i] = c;
    perPair[i] = weight * Math.max(c, 0);
    sumCos += c;
    sumScore += perPair[i]!;
  }
  return { cosine, perPair, score: sumScore / n, clampOfMeanScore: Math.max((weight * sumCos) / n, 0) };
}
