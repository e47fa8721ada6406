/**
 * The training noise schedule: β_t, α_t = 1 − β_t and ᾱ_t = Π_{s≤t} α_s (Ho et al. 2020, "DDPM", eq. 4), computed in
 * float32 exactly the way diffusers 0.31 / PyTorch does it, so `alphasCumprod` equals the reference tables bit for bit.
 *
 * Float32 details that matter for bit-exactness (checked against golden/schedulers.json):
 * - `linear` / `scaled_linear` use `torch.linspace(..., dtype=float32)`. The reference ran on aarch64, where that
 *   kernel computes `start + step·i` with fused multiply-adds, 8 lanes at a time (`Vectorized<float>::arange`), the
 *   first half counted from `start`, the second half from `end`. `torchLinspaceF32` reproduces it; a plain float64
 *   linspace rounded to float32 differs from it by 1 ulp in about a third of the entries (harmless, < 2e-9 absolute).
 * - `torch.cumprod` on CPU accumulates in float64 and rounds each output to float32.
 */
import { ConfigError } from '../errors';

const f32 = Math.fround;

export type BetaSchedule = 'linear' | 'scaled_linear' | 'squaredcos_cap_v2';
export const BETA_SCHEDULES: readonly BetaSchedule[] = ['linear', 'scaled_linear', 'squaredcos_cap_v2'];

/** The schedule-defining subset of a scheduler config (camelCase). */
export interface BetaScheduleConfig {
  numTrainTimesteps: number;
  betaStart: number;
  betaEnd: number;
  betaSchedule: BetaSchedule;
  /** Explicit β values (diffusers `trained_betas`); overrides `betaSchedule` when given. */
  trainedBetas?: readonly number[] | null;
  /** Rescale to zero terminal SNR (Lin et al. 2023, Algorithm 1). */
  rescaleBetasZeroSnr?: boolean;
}

// ---------------------------------------------------------------------------------------------------------------
// float32 arithmetic helpers

const f32Buf = new Float32Array(1);
const i32Buf = new Int32Array(f32Buf.buffer);

/** The float32 adjacent to float32 `x` in the direction of `towards` (x ≠ towards). */
function nextF32(x: number, towards: number): number {
  f32Buf[0] = x;
  if (x === 0) {
    i32Buf[0] = 1;
    return towards > 0 ? f32Buf[0] : -f32Buf[0];
  }
  i32Buf[0] += (towards > x) === (x > 0) ? 1 : -1;
  return f32Buf[0];
}

/**
 * float32 fused multiply-add: `a·b + c` rounded once (a, b, c float32). The product is exact in float64; the sum's
 * rounding error is recovered with TwoSum, which decides the only case where float64 → float32 double rounding is
 * wrong (the float64 sum lands exactly on a float32 midpoint).
 */
export function fmaF32(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const bb = s - p;
  const err = p - (s - bb) + (c - bb);
  const r = f32(s);
  if (err === 0 || r === s) return r;
  const other = nextF32(r, s);
  if (Math.abs(other - s) !== Math.abs(r - s)) return r; // not a midpoint: rounding of s is the rounding of s+err
  // exact value is s + err, just off the midpoint: round towards it
  return (err > 0) === (other > r) ? other : r;
}

/**
 * `torch.linspace(start, end, steps, dtype=torch.float32)` as computed by PyTorch's CPU kernel with 8-lane vectors
 * and fused multiply-adds (the reference platform). Returns float32 values in a Float32Array.
 */
export function torchLinspaceF32(start: number, end: number, steps: number): Float32Array {
  const out = new Float32Array(steps);
  if (steps === 1) {
    out[0] = start;
    return out;
  }
  const s = f32(start);
  const e = f32(end);
  const step = f32(f32(e - s) / (steps - 1));
  const halfway = Math.floor(steps / 2);
  const fromStart = (i: number): number => fmaF32(step, i, s);
  const fromEnd = (i: number): number => fmaF32(-step, steps - i - 1, e);
  const lanes = 8;
  const vectorEnd = steps - (steps % (2 * lanes)); // cpu_serial_kernel_vec: two vectors per iteration, scalar tail
  for (let c = 0; c < vectorEnd; c += lanes) {
    const base = c < halfway ? fromStart(c) : fromEnd(c);
    for (let k = 0; k < lanes; k++) out[c + k] = fmaF32(k, step, base);
  }
  for (let i = vectorEnd; i < steps; i++) out[i] = i < halfway ? fromStart(i) : fromEnd(i);
  return out;
}

/** Glide's cosine schedule (Nichol & Dhariwal 2021, eq. 17), β clipped at 0.999; float64 then float32. */
function cosineBetas(n: number, maxBeta = 0.999): Float32Array {
  const alphaBar = (t: number): number => Math.cos(((t + 0.008) / 1.008) * (Math.PI / 2)) ** 2;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.min(1 - alphaBar((i + 1) / n) / alphaBar(i / n), maxBeta);
  return out;
}

/** `torch.cumprod` of float32 values: float64 accumulator, float32 outputs. */
export function cumprodF32(x: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  let acc = 1;
  for (let i = 0; i < x.length; i++) {
    acc *= x[i]!;
    out[i] = acc;
  }
  return out;
}

/** α_t = 1 − β_t (float32). */
export function alphasFromBetas(betas: Float32Array): Float32Array {
  return betas.map((b) => f32(1 - b));
}

/** ᾱ_t = Π α_s (float32 outputs, float64 accumulation, as torch.cumprod on CPU). */
export function alphasCumprodFromBetas(betas: Float32Array): Float32Array {
  return cumprodF32(alphasFromBetas(betas));
}

/**
 * Rescales β so that the terminal SNR is zero (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps
 * are Flawed", Algorithm 1): √ᾱ is shifted so √ᾱ_T = 0 and scaled so √ᾱ_0 is unchanged. float32, as diffusers.
 */
export function rescaleZeroTerminalSnr(betas: Float32Array): Float32Array {
  const sqrtAc = alphasCumprodFromBetas(betas).map((a) => Math.sqrt(a));
  const first = sqrtAc[0]!;
  const last = sqrtAc[sqrtAc.length - 1]!;
  const scale = f32(first / f32(first - last));
  const acBar = sqrtAc.map((v) => {
    const shifted = f32(f32(v - last) * scale);
    return f32(shifted * shifted);
  });
  const out = new Float32Array(betas.length);
  for (let i = 0; i < betas.length; i++) {
    const alpha = i === 0 ? acBar[0]! : f32(acBar[i]! / acBar[i - 1]!);
    out[i] = f32(1 - alpha);
  }
  return out;
}

/** β_t for a scheduler config (float32, `[numTrainTimesteps]`). */
export function betasForConfig(config: BetaScheduleConfig): Float32Array {
  const n = config.numTrainTimesteps;
  let betas: Float32Array;
  if (config.trainedBetas) {
    if (config.trainedBetas.length !== n) {
      throw new ConfigError('trained_betas must have one value per training timestep', {
        field: 'trained_betas',
        expected: `${n} values (num_train_timesteps)`,
        found: `${config.trainedBetas.length} values`,
      });
    }
    betas = Float32Array.from(config.trainedBetas);
  } else if (config.betaSchedule === 'linear') {
    betas = torchLinspaceF32(config.betaStart, config.betaEnd, n);
  } else if (config.betaSchedule === 'scaled_linear') {
    // Latent-diffusion schedule: β = linspace(√β_start, √β_end)², squared in float32.
    betas = torchLinspaceF32(Math.sqrt(config.betaStart), Math.sqrt(config.betaEnd), n).map((v) => f32(v * v));
  } else if (config.betaSchedule === 'squaredcos_cap_v2') {
    betas = cosineBetas(n);
  } else {
    throw new ConfigError('unsupported beta schedule', {
      field: 'beta_schedule',
      expected: BETA_SCHEDULES.join(' | '),
      found: config.betaSchedule as string,
    });
  }
  return config.rescaleBetasZeroSnr ? rescaleZeroTerminalSnr(betas) : betas;
}

/** The float32 tables every scheduler derives from its config. */
export interface TrainSchedule {
  betas: Float32Array;
  alphas: Float32Array;
  alphasCumprod: Float32Array;
}

export function trainSchedule(config: BetaScheduleConfig): TrainSchedule {
  const betas = betasForConfig(config);
  const alphas = alphasFromBetas(betas);
  return { betas, alphas, alphasCumprod: cumprodF32(alphas) };
}
