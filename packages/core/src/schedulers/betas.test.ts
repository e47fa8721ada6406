import fc from 'fast-check';
import { ConfigError } from '../errors';
import { betasForConfig, fmaF32, rescaleZeroTerminalSnr, torchLinspaceF32, trainSchedule } from './betas';

const f32 = Math.fround;

/** Exact a·b + c rounded to float32, via BigInt rationals (reference for fmaF32). */
function exactFmaF32(a: number, b: number, c: number): number {
  const scale = 2n ** 400n;
  const toFixed = (x: number): bigint => {
    // x is float32: x·2^200 is an integer
    return BigInt(Math.round(x * 2 ** 149)) * 2n ** 51n; // 2^149 makes every float32 an integer; scale to 2^200
  };
  const sum = toFixed(a) * toFixed(b) + toFixed(c) * 2n ** 200n; // scaled by 2^400
  // round the scaled rational to the nearest float32 by bisection over candidates around the double estimate
  const approx = f32(Number(sum) / Number(scale));
  const candidates = [approx, nextAfter(approx, Infinity), nextAfter(approx, -Infinity)];
  let best = approx;
  let bestErr: bigint | null = null;
  for (const cand of candidates) {
    const err = sum - toFixed(cand) * 2n ** 200n;
    const abs = err < 0n ? -err : err;
    if (bestErr === null || abs < bestErr || (abs === bestErr && evenMantissa(cand))) {
      best = cand;
      bestErr = abs;
    }
  }
  return best;
}
function nextAfter(x: number, dir: number): number {
  const f = new Float32Array([x]);
  const i = new Int32Array(f.buffer);
  if (x === 0) {
    i[0] = 1;
    return dir > 0 ? f[0]! : -f[0]!;
  }
  i[0]! += (dir > x) === (x > 0) ? 1 : -1;
  return f[0]!;
}
function evenMantissa(x: number): boolean {
  return (new Int32Array(new Float32Array([x]).buffer)[0]! & 1) === 0;
}

describe('float32 schedule arithmetic', () => {
  it('fmaF32 rounds a·b + c once (fast-check against exact rationals)', () => {
    const f = fc.float({ min: -4, max: 4, noNaN: true, noDefaultInfinity: true }).map(f32);
    fc.assert(fc.property(f, f, f, (a, b, c) => fmaF32(a, b, c) === exactFmaF32(a, b, c)), { seed: 7, numRuns: 50 });
    // a midpoint case where float64 rounding followed by float32 rounding is wrong
    const a = 1 + 2 ** -12;
    const b = 1 + 2 ** -12;
    const c = -(2 ** -24) - 2 ** -52;
    expect(fmaF32(f32(a), f32(b), f32(c))).toBe(exactFmaF32(f32(a), f32(b), f32(c)));
  });

  it('torchLinspaceF32 hits both ends, is monotone and within 1 ulp of the float64 linspace', () => {
    for (const [s, e, n] of [[0.0001, 0.02, 1000], [Math.sqrt(0.00085), Math.sqrt(0.012), 1000], [0, 1, 37], [2, -3, 17]] as const) {
      const v = torchLinspaceF32(s, e, n);
      expect(v[0]).toBe(f32(s));
      expect(v[n - 1]).toBe(f32(e));
      for (let i = 1; i < n; i++) expect(Math.sign(v[i]! - v[i - 1]!)).toBe(Math.sign(e - s));
      for (let i = 0; i < n; i++) expect(Math.abs(v[i]! - (s + ((e - s) * i) / (n - 1)))).toBeLessThanOrEqual(2 * Math.abs(f32(e)) * 2 ** -23 + 1e-12);
    }
  });
});

describe('beta schedules', () => {
  const base = { numTrainTimesteps: 1000, betaStart: 0.00085, betaEnd: 0.012 } as const;

  it('scaled_linear: β = linspace(√β0, √β1)², increasing; ᾱ decreasing in (0, 1)', () => {
    const s = trainSchedule({ ...base, betaSchedule: 'scaled_linear' });
    expect(s.betas[0]).toBe(f32(f32(Math.sqrt(0.00085)) ** 2));
    expect(Math.abs(s.betas[999]! - 0.012)).toBeLessThan(1e-9);
    for (let i = 1; i < 1000; i++) {
      expect(s.betas[i]!).toBeGreaterThan(s.betas[i - 1]!);
      expect(s.alphasCumprod[i]!).toBeLessThan(s.alphasCumprod[i - 1]!);
    }
    expect(s.alphasCumprod[0]).toBe(f32(1 - s.betas[0]!));
  });

  it('linear and squaredcos_cap_v2 (Nichol & Dhariwal eq. 17, clipped at 0.999)', () => {
    const lin = betasForConfig({ ...base, betaStart: 0.0001, betaEnd: 0.02, betaSchedule: 'linear' });
    expect(lin[0]).toBe(f32(0.0001));
    expect(lin[999]).toBe(f32(0.02));
    const cos = trainSchedule({ ...base, betaSchedule: 'squaredcos_cap_v2' });
    const alphaBar = (t: number) => Math.cos(((t + 0.008) / 1.008) * (Math.PI / 2)) ** 2;
    for (const t of [0, 100, 500, 900]) expect(Math.abs(cos.alphasCumprod[t]! / (alphaBar((t + 1) / 1000) / alphaBar(0)) - 1)).toBeLessThan(1e-4);
    expect(cos.betas[999]).toBe(f32(0.999));
  });

  it('rescale_betas_zero_snr: ᾱ_T = 0, ᾱ_0 unchanged (Lin et al. 2023, Alg. 1)', () => {
    const plain = trainSchedule({ ...base, betaSchedule: 'scaled_linear' });
    const z = trainSchedule({ ...base, betaSchedule: 'scaled_linear', rescaleBetasZeroSnr: true });
    expect(z.alphasCumprod[999]).toBe(0);
    expect(Math.abs(z.alphasCumprod[0]! - plain.alphasCumprod[0]!)).toBeLessThan(1e-6);
    expect(rescaleZeroTerminalSnr(plain.betas)[999]).toBe(1);
  });

  it('trained_betas are used as given and must have one value per timestep', () => {
    const betas = Array.from({ length: 10 }, (_, i) => 0.01 * (i + 1));
    expect(Array.from(betasForConfig({ ...base, numTrainTimesteps: 10, betaSchedule: 'linear', trainedBetas: betas }))).toEqual(betas.map(f32));
    expect(() => betasForConfig({ ...base, betaSchedule: 'linear', trainedBetas: betas })).toThrow(ConfigError);
  });
});
