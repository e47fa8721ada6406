import { snrFromAlphasCumprod, minSnrWeights } from './diffusion';

/**
 * Min-SNR-γ weights beyond the reference's two objectives: x₀-prediction ("sample") gets w = min(SNR, γ), the ε
 * weighting carried to x₀ space (or min(SNR + 1, γ), the v weighting, with `x0WeightedAs: 'v_prediction'`). Checked as the identity it is built on: for the ε̂ and v̂ implied by a prediction x̂₀,
 * w_ε·(ε − ε̂)² = w_x₀·(x₀ − x̂₀)², and w_v·(v − v̂)² = w_x₀·(x₀ − x̂₀)² with the reference's (SNR + 1) v weighting
 * wherever min(SNR + 1, γ) and min(SNR, γ) agree in kind (SNR ≥ γ: both capped).
 */
describe('minSnrWeights for x₀-prediction', () => {
  // cosine (squaredcos_cap_v2) ᾱ for T = 1000
  const T = 1000;
  const abar = Array.from({ length: T }, (_, t) => Math.cos(((t / T + 0.008) / 1.008) * (Math.PI / 2)) ** 2 / Math.cos((0.008 / 1.008) * (Math.PI / 2)) ** 2);
  const ts = [1, 10, 50, 150, 300, 450, 600, 800, 950, 999];
  const snr = snrFromAlphasCumprod(abar, ts);

  it('is min(SNR, γ)', () => {
    const w = minSnrWeights(snr, 5, 'sample');
    ts.forEach((_, i) => expect(w[i]).toBe(Math.fround(Math.min(snr[i]!, 5))));
  });

  it('weights the x₀ error as the ε objective weights the implied ε error', () => {
    const gamma = 5;
    const wx = minSnrWeights(snr, gamma, 'sample');
    const we = minSnrWeights(snr, gamma, 'epsilon');
    const wv = minSnrWeights(snr, gamma, 'v_prediction');
    ts.forEach((t, i) => {
      const a = Math.sqrt(abar[t]!);
      const s = Math.sqrt(1 - abar[t]!);
      const [x0, eps, x0hat] = [0.3, -1.2, 0.1];
      const xt = a * x0 + s * eps;
      const epsHat = (xt - a * x0hat) / s;
      const ex = wx[i]! * (x0 - x0hat) ** 2;
      // relative: SNR is float32 (as the reference), coarse where ᾱ is close to 1
      expect(Math.abs(we[i]! * (eps - epsHat) ** 2 - ex)).toBeLessThan(2e-3 * ex);
      if (snr[i]! >= gamma) {
        const v = a * eps - s * x0;
        const vHat = a * epsHat - s * x0hat;
        expect(Math.abs(wv[i]! * (v - vHat) ** 2 - ex)).toBeLessThan(2e-3 * ex);
      }
    });
  });

  it('x0WeightedAs v_prediction weights the x₀ error as the v objective weights the implied v error, at every t', () => {
    const gamma = 5;
    const wx = minSnrWeights(snr, gamma, 'sample', 'v_prediction');
    const wv = minSnrWeights(snr, gamma, 'v_prediction');
    ts.forEach((t, i) => {
      expect(wx[i]).toBe(Math.fround(Math.min(Math.fround(snr[i]! + 1), gamma)));
      expect(wx[i]).toBeGreaterThanOrEqual(1); // the noisy timesteps keep weight ≥ 1 (ε form: SNR → 0)
      const a = Math.sqrt(abar[t]!);
      const s = Math.sqrt(1 - abar[t]!);
      const [x0, eps, x0hat] = [0.3, -1.2, 0.1];
      const epsHat = (a * x0 + s * eps - a * x0hat) / s;
      const ex = wx[i]! * (x0 - x0hat) ** 2;
      const v = a * eps - s * x0;
      const vHat = a * epsHat - s * x0hat;
      expect(Math.abs(wv[i]! * (v - vHat) ** 2 - ex)).toBeLessThan(2e-3 * ex);
    });
    expect(minSnrWeights(snr, gamma, 'epsilon', 'v_prediction')).toEqual(minSnrWeights(snr, gamma, 'epsilon')); // only x₀ models
  });

  it('rejects unknown objectives by name', () => {
    expect(() => minSnrWeights(snr, 5, 'sample', 'flow' as never)).toThrow(/x0WeightedAs.*|epsilon \| v_prediction/);
    expect(() => minSnrWeights(snr, 5, 'flow' as never)).toThrow(/epsilon \| v_prediction \| sample/);
  });
});
