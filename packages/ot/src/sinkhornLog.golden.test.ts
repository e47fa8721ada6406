import * as tf from '@tensorflow/tfjs-core';
import { describeBackends, describeGolden, expectClose, goldenArray, GoldenArray, readGoldenJson } from '@aptp/core/testing';
import { sinkhornLog, sinkhornLogTf } from './sinkhornLog';
import { Matrix } from './matrix';

interface SinkhornCase {
  marginals: 'uniform' | 'nonuniform';
  reg: number;
  stopThr: number;
  iterations_upper_bound: number;
  plan: GoldenArray;
  transport_cost: number;
  log_u: GoldenArray;
  log_v: GoldenArray;
}
interface OtCase {
  name: string;
  n: number;
  m: number;
  M: GoldenArray;
  marginals: Record<string, { a: GoldenArray; b: GoldenArray }>;
  sinkhorn: SinkhornCase[];
}

function matrixOf(g: GoldenArray): Matrix {
  return { rows: g.shape[0]!, cols: g.shape[1]!, data: Float64Array.from(g.data) };
}

describeGolden('ot.json', 'sinkhornLog vs POT sinkhorn_log (ot.json)', (file) => {
  const cases = readGoldenJson<{ cases: OtCase[] }>(file).cases;

  for (const c of cases) {
    for (const s of c.sinkhorn) {
      const label = `${c.name} ${s.marginals} reg ${s.reg}`;
      it(`float64 plan, cost and log scalings: ${label}`, () => {
        const { a, b } = c.marginals[s.marginals]!;
        const r = sinkhornLog(a.data, b.data, matrixOf(c.M), s.reg, { tol: s.stopThr, maxIter: 100000 });
        expect(r.converged).toBe(true);
        expect(r.iterations).toBeLessThanOrEqual(s.iterations_upper_bound + 1);
        // README: float64 plans to 1e-9 absolute.
        expectClose(r.plan.data, s.plan.data, { name: `${label} plan`, atol: 1e-9 });
        expect(Math.abs(r.plan.data.reduce((acc, v, k) => acc + v * c.M.data[k]!, 0) - s.transport_cost)).toBeLessThan(1e-9);
        // Same iteration from zeros as POT → the same potentials (not only up to a constant).
        expectClose(r.logU, s.log_u.data, { name: `${label} log_u`, rtol: 1e-9 });
        expectClose(r.logV, s.log_v.data, { name: `${label} log_v`, rtol: 1e-9 });
      });
    }
  }
});

describeGolden('ot.json', 'sinkhornLogTf (float32) vs POT', (file) => {
  const cases = readGoldenJson<{ cases: OtCase[] }>(file).cases;
  describeBackends('sinkhornLogTf', () => {
    for (const c of cases) {
      for (const s of c.sinkhorn) {
        const label = `${c.name} ${s.marginals} reg ${s.reg}`;
        it(`float32 plan within 1e-5·max(plan): ${label}`, async () => {
          const { a, b } = c.marginals[s.marginals]!;
          const M = goldenArray(c.M);
          const at = tf.tensor1d(Float32Array.from(a.data));
          const bt = tf.tensor1d(Float32Array.from(b.data));
          const Mt = tf.tensor2d(Float32Array.from(M.data), [c.n, c.m]);
          const r = await sinkhornLogTf(at, bt, Mt, s.reg, { tol: 1e-7, maxIter: 3000 });
          try {
            const maxPlan = Math.max(...s.plan.data);
            expectClose(r.plan, s.plan.data, { name: `${label} plan`, atol: 1e-5 * maxPlan, shape: [c.n, c.m] });
          } finally {
            tf.dispose([at, bt, Mt, r.plan, r.logU, r.logV]);
          }
        });
      }
    }
  });
});

