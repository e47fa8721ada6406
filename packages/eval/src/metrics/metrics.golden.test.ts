import * as path from 'node:path';
import { describeGolden, expectClose, goldenArray, readGoldenJson } from '@aptp/core/testing';
import type { GoldenArray } from '@aptp/core/testing';
import { clipScore } from './clipScore';
import { cmmd, l2NormalizeRows } from './cmmd';
import { frechetDistance, gaussianStats } from './frechet';
import type { FeatureMatrix } from './frechet';
import { Float64Linalg } from './matmul64';

interface MetricsJson {
  features: Record<string, GoldenArray>;
  fid: {
    x: string;
    y: string;
    mu_x: GoldenArray;
    mu_y: GoldenArray;
    sigma_x: GoldenArray;
    sigma_y: GoldenArray;
    mean_term: number;
    trace_sigma_x: number;
    trace_sigma_y: number;
    trace_sqrtm_product: number;
    fid: number;
  }[];
  cmmd: {
    x: string;
    y: string;
    l2_normalize_rows_first: boolean;
    sigma: number;
    scale: number;
    cmmd: number;
    cmmd_computed_in_float32: number;
    mean_k_xx: number;
    mean_k_xy: number;
    mean_k_yy: number;
  }[];
  clip_score: {
    image_embeds: GoldenArray;
    text_embeds: GoldenArray;
    weight: number;
    cosine: GoldenArray;
    clip_score_per_pair: GoldenArray;
    mean_of_clamped_scores: number;
    clamp_of_mean_score: number;
  };
}

function matrix(g: GoldenArray): FeatureMatrix {
  const { shape, data } = goldenArray(g);
  return { data, rows: shape[0]!, dim: shape[1]! };
}

/** |ours − ref| <= rel·max(1, |ref|) */
function expectRel(ours: number, ref: number, rel: number, name: string): void {
  expectClose([ours], [ref], { name, rtol: rel });
}

describeGolden('metrics.json', 'metrics vs metrics.json (pytorch-fid / CMMD reference / CLIP score)', (file) => {
  const golden = readGoldenJson<MetricsJson>(path.resolve(file));
  const linalg = new Float64Linalg();
  afterAll(() => linalg.dispose());

  for (const c of golden.fid) {
    test(`FID ${c.x} vs ${c.y}: statistics and every term to 1e-8 relative`, async () => {
      const x = await gaussianStats(matrix(golden.features[c.x]!), { linalg, chunkRows: 64 });
      const y = await gaussianStats(matrix(golden.features[c.y]!), { linalg });
      expectClose(x.mu, goldenArray(c.mu_x).data, { name: 'mu_x', atol: 1e-12 });
      expectClose(y.mu, goldenArray(c.mu_y).data, { name: 'mu_y', atol: 1e-12 });
      expectClose(x.sigma, goldenArray(c.sigma_x).data, { name: 'sigma_x', atol: 1e-12 });
      expectClose(y.sigma, goldenArray(c.sigma_y).data, { name: 'sigma_y', atol: 1e-12 });
      const r = await frechetDistance(x, y, { linalg });
      expectRel(r.meanTerm, c.mean_term, 1e-10, 'mean_term');
      expectRel(r.traceSigmaX, c.trace_sigma_x, 1e-10, 'trace_sigma_x');
      expectRel(r.traceSigmaY, c.trace_sigma_y, 1e-10, 'trace_sigma_y');
      expectRel(r.traceSqrtProduct, c.trace_sqrtm_product, 1e-10, 'trace_sqrtm_product');
      expectRel(r.fid, c.fid, 1e-8, 'fid');
      expect(r.zeroPivots).toBe(0);
      // From the stored statistics too (the path used with cached reference statistics).
      const stored = await frechetDistance(
        { mu: goldenArray(c.mu_x).data as Float64Array, sigma: goldenArray(c.sigma_x).data as Float64Array, dim: x.dim, count: 0 },
        { mu: goldenArray(c.mu_y).data as Float64Array, sigma: goldenArray(c.sigma_y).data as Float64Array, dim: y.dim, count: 0 },
      );
      expectRel(stored.fid, c.fid, 1e-8, 'fid from stored stats');
      // Symmetric in its arguments.
      expectRel((await frechetDistance(y, x, { linalg })).fid, c.fid, 1e-8, 'fid(y, x)');
    });
  }

  for (const c of golden.cmmd) {
    const label = `CMMD ${c.x} vs ${c.y}${c.l2_normalize_rows_first ? ' (rows L2-normalised)' : ''}`;
    const prep = (m: FeatureMatrix): FeatureMatrix => (c.l2_normalize_rows_first ? l2NormalizeRows(m) : m);
    test(`${label}: float64 to 1e-8 relative, block-wise tiles agree`, async () => {
      const x = prep(matrix(golden.features[c.x]!));
      const y = prep(matrix(golden.features[c.y]!));
      for (const blockRows of [4096, 37]) {
        const r = await cmmd(x, y, { sigma: c.sigma, scale: c.scale, blockRows });
        expectRel(r.cmmd, c.cmmd, 1e-8, `cmmd (block ${blockRows})`);
        expectRel(r.meanKxx, c.mean_k_xx, 1e-10, 'mean_k_xx');
        expectRel(r.meanKyy, c.mean_k_yy, 1e-10, 'mean_k_yy');
        expectRel(r.meanKxy, c.mean_k_xy, 1e-10, 'mean_k_xy');
      }
    });
    test(`${label}: float32 kernel to 1e-4 relative`, async () => {
      const r = await cmmd(prep(matrix(golden.features[c.x]!)), prep(matrix(golden.features[c.y]!)), { dtype: 'float32', blockRows: 50 });
      expectClose([r.cmmd], [c.cmmd], { name: 'cmmd float32', atol: 1e-4 * Math.abs(c.cmmd) });
      expectClose([r.cmmd], [c.cmmd_computed_in_float32], { name: 'cmmd vs reference float32', atol: 1e-4 * Math.abs(c.cmmd) });
    });
  }

  test('CLIP score: per-pair cosine and clamped scores to 1e-6 relative, both averaging conventions', () => {
    const cs = golden.clip_score;
    const r = clipScore(matrix(cs.image_embeds), matrix(cs.text_embeds), cs.weight);
    expectClose(r.cosine, goldenArray(cs.cosine).data, { name: 'cosine', atol: 1e-9 });
    expectClose(r.perPair, goldenArray(cs.clip_score_per_pair).data, { name: 'clip_score_per_pair', rtol: 1e-8 });
    expectRel(r.score, cs.mean_of_clamped_scores, 1e-8, 'mean_of_clamped_scores');
    expectRel(r.clampOfMeanScore, cs.clamp_of_mean_score, 1e-8, 'clamp_of_mean_score');
    // The fixture has negative cosines, so the clamp matters.
    expect(Array.from(r.cosine).some((v) => v < 0)).toBe(true);
  });
});
