import { describeGolden, expectClose, GoldenArray, readGoldenJson } from '@aptp/core/testing';
import { emd } from './emd';
import { marginalsOf } from './matrix';

interface EmdCase {
  marginals: 'uniform' | 'nonuniform';
  plan: GoldenArray;
  cost: number;
  nonzeros: number;
}
interface OtCase {
  name: string;
  n: number;
  m: number;
  M: GoldenArray;
  marginals: Record<string, { a: GoldenArray; b: GoldenArray }>;
  emd?: EmdCase[];
}

describeGolden('ot.json', 'emd vs POT ot.emd (ot.json)', (file) => {
  const cases = readGoldenJson<{ cases: OtCase[] }>(file).cases.filter((c) => c.emd && c.emd.length > 0);

  it('has the EMD cases of the README (8x4 and 64x8, both marginal sets)', () => {
    expect(cases.map((c) => c.name)).toEqual(['8x4', '64x8']);
    expect(cases.every((c) => c.emd!.length === 2)).toBe(true);
  });

  for (const c of cases) {
    for (const e of c.emd!) {
      const label = `${c.name} ${e.marginals}`;
      it(`exact plan (1e-12), cost and support: ${label}`, () => {
        const { a, b } = c.marginals[e.marginals]!;
        const M = { rows: c.n, cols: c.m, data: Float64Array.from(c.M.data) };
        const r = emd(a.data, b.data, M);
        expectClose(r.plan.data, e.plan.data, { name: `${label} plan`, atol: 1e-12 });
        expect(Math.abs(r.cost - e.cost)).toBeLessThan(1e-12);
        expect(r.plan.data.filter((v) => v > 0).length).toBe(e.nonzeros);
        const { rowSums, colSums } = marginalsOf(r.plan);
        expectClose(rowSums, a.data, { name: `${label} row marginal`, atol: 1e-15 });
        expectClose(colSums, b.data, { name: `${label} column marginal`, atol: 1e-15 });
        // Strong duality: Σ a·u + Σ b·v equals the cost.
        const dual = a.data.reduce((s, x, i) => s + x * r.u[i]!, 0) + b.data.reduce((s, x, j) => s + x * r.v[j]!, 0);
        expect(Math.abs(dual - e.cost)).toBeLessThan(1e-12);
      });
    }
  }
});
