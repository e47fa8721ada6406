/**
 * PNDMScheduler beyond the SD 2.1 golden chain (pndm.golden.test.ts pins PLMS with `skip_prk_steps`):
 * - a DDIM `scheduler_config.json` without `skip_prk_steps` (the synthetic teacher's: cosine betas, v-prediction,
 *   trailing spacing) builds a PNDM sampler as diffusers' `PNDMScheduler.from_config(ddim_config)` does: PNDM's own
 *   fields kept, DDIM's dropped, `skip_prk_steps` defaulting to false, i.e. F-PNDM (Runge–Kutta warm-up, then PLMS);
 * - F-PNDM timesteps, written out by hand from diffusers' `set_timesteps`;
 * - every step of F-PNDM and PLMS against a float64 re-computation written literally from diffusers' `step_prk` /
 *   `step_plms` / `_get_prev_sample`;
 * - the exact point-mass trajectory (PNDM eq. 9 maps the trajectory onto itself when ε is exact, and the RK weights
 *   sum to 1), resumable state, batch independence and memory for the PRK phase.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { InputError } from '../errors';
import { Rng } from '../rng/rng';
import { describeBackends } from '../testing/backends';
import { expectClose } from '../testing/expectClose';
import { expectNoTensorLeak } from '../testing/leaks';
import { createScheduler, loadScheduler } from './loadScheduler';
import { PNDMScheduler } from './pndm';
import { schedulerConfigFromJson, schedulerConfigToJson, type SchedulerConfig } from './schedulerConfig';

/** A DDIM file as apps/trainer's synthetic teacher writes it (`samplingSchedulerJson`). */
const TEACHER_DDIM_FILE = {
  _class_name: 'DDIMScheduler',
  beta_end: 0.02,
  beta_schedule: 'squaredcos_cap_v2',
  beta_start: 0.0001,
  clip_sample: true,
  clip_sample_range: 1,
  dynamic_thresholding_ratio: 0.995,
  num_train_timesteps: 1000,
  prediction_type: 'v_prediction',
  rescale_betas_zero_snr: false,
  sample_max_value: 1,
  set_alpha_to_one: false,
  steps_offset: 0,
  thresholding: false,
  timestep_spacing: 'trailing',
  trained_betas: null,
};

/** diffusers 0.31 `PNDMScheduler.__init__` arguments: the only keys `from_config` keeps. */
const PNDM_KEYS = [
  'beta_end', 'beta_schedule', 'beta_start', 'num_train_timesteps', 'prediction_type', 'set_alpha_to_one', 'skip_prk_steps',
  'steps_offset', 'timestep_spacing', 'trained_betas',
];

describe('PNDMScheduler from a DDIM config (diffusers from_config)', () => {
  it('keeps the shared fields, drops DDIM-only ones, and defaults skip_prk_steps to false', () => {
    const c = schedulerConfigFromJson('PNDMScheduler', TEACHER_DDIM_FILE);
    const json = schedulerConfigToJson('PNDMScheduler', c);
    expect(Object.keys(json).filter((k) => k !== '_class_name').sort()).toEqual(PNDM_KEYS);
    expect(json).toEqual({
      _class_name: 'PNDMScheduler',
      beta_end: 0.02, beta_schedule: 'squaredcos_cap_v2', beta_start: 0.0001, num_train_timesteps: 1000,
      prediction_type: 'v_prediction', set_alpha_to_one: false, skip_prk_steps: false, steps_offset: 0,
      timestep_spacing: 'trailing', trained_betas: null,
    });
    for (const dropped of ['clip_sample', 'clip_sample_range', 'dynamic_thresholding_ratio', 'rescale_betas_zero_snr', 'sample_max_value', 'thresholding']) {
      expect(json).not.toHaveProperty(dropped);
    }
  });

  it('ignores DDIM-only values PNDM could not use (thresholding, zero-SNR rescale) instead of refusing them', () => {
    const ddimOnly = { ...TEACHER_DDIM_FILE, thresholding: true, rescale_betas_zero_snr: true, clip_sample: false };
    expect(() => schedulerConfigFromJson('DDIMScheduler', ddimOnly)).toThrow(/thresholding/);
    const pndm = createScheduler(ddimOnly, { className: 'PNDMScheduler' });
    const plain = createScheduler(TEACHER_DDIM_FILE, { className: 'PNDMScheduler' });
    expect(pndm.config).toEqual(plain.config);
    expect(Array.from(pndm.alphasCumprod)).toEqual(Array.from(plain.alphasCumprod)); // no zero-SNR rescale in PNDM
  });

  it('loads the folder with className PNDMScheduler and keeps an explicit skip_prk_steps', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'aptp-pndm-'));
    try {
      fs.mkdirSync(path.join(dir, 'scheduler'));
      const file = path.join(dir, 'scheduler', 'scheduler_config.json');
      fs.writeFileSync(file, JSON.stringify(TEACHER_DDIM_FILE));
      const s = loadScheduler(dir, { className: 'PNDMScheduler' });
      expect(s).toBeInstanceOf(PNDMScheduler);
      expect(s.config.skipPrkSteps).toBe(false);
      fs.writeFileSync(file, JSON.stringify({ ...TEACHER_DDIM_FILE, skip_prk_steps: true }));
      expect(loadScheduler(dir, { className: 'PNDMScheduler' }).config.skipPrkSteps).toBe(true);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('F-PNDM timesteps (skip_prk_steps false)', () => {
  it('teacher config, 25 steps: 12 PRK entries over the 4 largest trailing timesteps, then PLMS from the 4th', () => {
    const s = PNDMScheduler.fromJson(TEACHER_DDIM_FILE);
    s.setTimesteps(25);
    // trailing grid 999, 959, …, 39 (r = 40, h = 20)
    expect(s.timesteps.slice(0, 12)).toEqual([999, 979, 979, 959, 959, 939, 939, 919, 919, 899, 899, 879]);
    expect(s.timesteps.slice(12)).toEqual(Array.from({ length: 22 }, (_, i) => 879 - 40 * i));
    expect(s.timesteps).toHaveLength(25 + 9);
    expect(s.prkSteps).toBe(12);
  });

  it('leading spacing with steps_offset 1, 10 steps (r = 100, h = 50)', () => {
    const s = new PNDMScheduler({ timestepSpacing: 'leading', stepsOffset: 1 });
    s.setTimesteps(10);
    expect(s.timesteps).toEqual([901, 851, 851, 801, 801, 751, 751, 701, 701, 651, 651, 601, 601, 501, 401, 301, 201, 101, 1]);
  });

  it('few steps: N = 2 and 3 are Runge–Kutta steps only; N = 1 (empty in diffusers) is refused', () => {
    const s = new PNDMScheduler({ timestepSpacing: 'leading' });
    s.setTimesteps(2); // grid 0, 500; h = 250
    expect(s.timesteps).toEqual([500, 250, 250, 0]);
    s.setTimesteps(3); // grid 0, 333, 666; h = 166
    expect(s.timesteps).toEqual([666, 499, 499, 333, 333, 166, 166, 0]);
    expect(() => s.setTimesteps(1)).toThrow(InputError);
    expect(() => s.setTimesteps(1)).toThrow(/skip_prk_steps/);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// float64 reference, transcribed from diffusers' PNDMScheduler (step → step_prk / step_plms → _get_prev_sample)

type Vec = Float64Array;
const lin = (terms: [number, Vec][]): Vec => {
  const out = new Float64Array(terms[0]![1].length);
  for (const [c, v] of terms) for (let i = 0; i < out.length; i++) out[i]! += c * v[i]!;
  return out;
};

class ReferencePndm {
  counter = 0;
  ets: Vec[] = [];
  curSample: Vec | null = null;
  curModelOutput: Vec | null = null;

  constructor(private readonly ac: Float32Array, private readonly cfg: SchedulerConfig, private readonly n: number, private readonly prkLength: number) {}

  step(m: Vec, timestep: number, sample: Vec): Vec {
    return this.counter < this.prkLength && !this.cfg.skipPrkSteps ? this.stepPrk(m, timestep, sample) : this.stepPlms(m, timestep, sample);
  }

  private stepPrk(m: Vec, timestep: number, sample: Vec): Vec {
    const T = this.cfg.numTrainTimesteps;
    const diffToPrev = this.counter % 2 ? 0 : Math.floor(Math.floor(T / this.n) / 2);
    const prev = timestep - diffToPrev;
    const t = this.prkT[Math.floor(this.counter / 4) * 4]!;
    let out = m;
    if (this.counter % 4 === 0) {
      this.curModelOutput = lin([[1 / 6, m]]);
      this.ets.push(m);
      this.curSample = sample;
    } else if ((this.counter - 1) % 4 === 0 || (this.counter - 2) % 4 === 0) {
      this.curModelOutput = lin([[1, this.curModelOutput!], [1 / 3, m]]);
    } else {
      out = lin([[1, this.curModelOutput!], [1 / 6, m]]);
      this.curModelOutput = null;
    }
    const r = this.prevSample(this.curSample ?? sample, t, prev, out);
    this.counter += 1;
    return r;
  }

  prkT: number[] = [];

  private stepPlms(m: Vec, timestep: number, sample: Vec): Vec {
    const r = Math.floor(this.cfg.numTrainTimesteps / this.n);
    let t = timestep;
    let prev = t - r;
    if (this.counter !== 1) {
      this.ets = this.ets.slice(-3);
      this.ets.push(m);
    } else {
      prev = t;
      t = t + r;
    }
    const e = this.ets;
    let out: Vec;
    let x = sample;
    if (e.length === 1 && this.counter === 0) {
      out = m;
      this.curSample = sample;
    } else if (e.length === 1 && this.counter === 1) {
      out = lin([[0.5, m], [0.5, e[0]!]]);
      x = this.curSample!;
      this.curSample = null;
    } else if (e.length === 2) out = lin([[1.5, e[1]!], [-0.5, e[0]!]]);
    else if (e.length === 3) out = lin([[23 / 12, e[2]!], [-16 / 12, e[1]!], [5 / 12, e[0]!]]);
    else out = lin([[55 / 24, e[3]!], [-59 / 24, e[2]!], [37 / 24, e[1]!], [-9 / 24, e[0]!]]);
    const res = this.prevSample(x, t, prev, out);
    this.counter += 1;
    return res;
  }

  /** Coefficients of prev = coeffX·x − coeffE·ε (for the error bound) and the result. */
  prevSample(x: Vec, t: number, prev: number, m: Vec): Vec {
    const a = this.ac[t]!;
    const ap = prev >= 0 ? this.ac[prev]! : this.cfg.setAlphaToOne ? 1 : this.ac[0]!;
    const eps = this.cfg.predictionType === 'v_prediction' ? lin([[Math.sqrt(a), m], [Math.sqrt(1 - a), x]]) : m;
    const sampleCoeff = Math.sqrt(ap / a);
    const denom = a * Math.sqrt(1 - ap) + Math.sqrt(a * (1 - a) * ap);
    this.lastSampleCoeff = sampleCoeff;
    return lin([[sampleCoeff, x], [-(ap - a) / denom, eps]]);
  }

  lastSampleCoeff = 1;
}

const SHAPE = [2, 4, 3, 3];
const data64 = (t: tf.Tensor): Vec => Float64Array.from(t.dataSync());
const maxAbs = (v: Vec): number => v.reduce((m, x) => Math.max(m, Math.abs(x)), 0);

describeBackends('F-PNDM and PLMS steps vs a float64 transcription of diffusers', () => {
  const cases: [string, Record<string, unknown>, number][] = [
    ['teacher config (F-PNDM, cosine, v, trailing), 6 steps', TEACHER_DDIM_FILE, 6],
    ['teacher config (F-PNDM), 25 steps', TEACHER_DDIM_FILE, 25],
    ['teacher config with skip_prk_steps (PLMS), 8 steps', { ...TEACHER_DDIM_FILE, skip_prk_steps: true }, 8],
    ['F-PNDM epsilon, scaled-linear, leading + offset 1, 10 steps', {
      beta_schedule: 'scaled_linear', beta_start: 0.00085, beta_end: 0.012, prediction_type: 'epsilon', steps_offset: 1, set_alpha_to_one: true,
    }, 10],
  ];
  it.each(cases)('%s: every prev_sample finite and within float32 error of the reference', (_name, file, n) => {
    const s = createScheduler(file, { className: 'PNDMScheduler' }) as PNDMScheduler;
    s.setTimesteps(n);
    const ref = new ReferencePndm(s.alphasCumprod, s.config, n, s.prkSteps);
    ref.prkT = s.timesteps.slice(0, s.prkSteps);
    let x = Rng.forKey(21, 'x').normalTensor(SHAPE);
    s.timesteps.forEach((t, i) => {
      const m = Rng.forKey(21, 'model', i).normalTensor(SHAPE);
      const xs = data64(x);
      const expected = ref.step(data64(m), t, xs);
      const next = s.step(m, t, x).prevSample;
      const got = next.dataSync();
      expect(got.every((v) => Number.isFinite(v))).toBe(true);
      // float32 arithmetic cancels terms of size √(ᾱ'/ᾱ)·|x| (up to ≈ 5e3 from t = 999 of the cosine schedule, where
      // ᾱ ≈ 2e-9; measured error there ≈ 8e-8·√(ᾱ'/ᾱ)·|x|, elsewhere ≤ 2e-6 absolute)
      const bound = 1e-4 * Math.max(1, maxAbs(expected)) + 1e-6 * ref.lastSampleCoeff * maxAbs(xs);
      expectClose(got, expected, { name: `step ${i} (t = ${t})`, atol: bound });
      tf.dispose([m, x]);
      x = next;
    });
    x.dispose();
    s.dispose();
  });

  it('first F-PNDM call by hand: x(d − h) = φ(x_d, d, d − h, √ᾱ_d·v + √(1−ᾱ_d)·x_d)', () => {
    const s = PNDMScheduler.fromJson(TEACHER_DDIM_FILE);
    s.setTimesteps(25);
    const x = Rng.forKey(5, 'x').normalTensor([1, 4, 2, 2]);
    const v = Rng.forKey(5, 'v').normalTensor([1, 4, 2, 2]);
    const a = s.alphasCumprod[999]!;
    const ap = s.alphasCumprod[979]!;
    const xs = data64(x);
    const vs = data64(v);
    const expected = xs.map((xi, i) => {
      const eps = Math.sqrt(a) * vs[i]! + Math.sqrt(1 - a) * xi;
      return Math.sqrt(ap / a) * xi - ((ap - a) * eps) / (a * Math.sqrt(1 - ap) + Math.sqrt(a * (1 - a) * ap));
    });
    const out = s.step(v, 999, x).prevSample;
    expectClose(out, expected, { name: 'first PRK call', atol: 1e-4 * Math.max(1, maxAbs(expected)) + 1e-6 * Math.sqrt(ap / a) * maxAbs(xs) });
    tf.dispose([x, v, out]);
    s.dispose();
  });
});

describeBackends('F-PNDM properties', () => {
  const make = (over: Partial<SchedulerConfig> = {}): PNDMScheduler =>
    new PNDMScheduler({ betaSchedule: 'scaled_linear', betaStart: 0.00085, betaEnd: 0.012, predictionType: 'epsilon', ...over });

  const chain = (s: PNDMScheduler, x0: tf.Tensor, seed: number, from = 0, to = s.timesteps.length): tf.Tensor => {
    let x = x0.clone();
    for (let i = from; i < to; i++) {
      const next = tf.tidy(() => s.step(Rng.forKey(seed, 'model', i).normalTensor(SHAPE), s.timesteps[i]!, x).prevSample);
      x.dispose();
      x = next;
    }
    return x;
  };

  it.each(['leading', 'trailing'] as const)('follows the exact point-mass trajectory with an exact ε (%s, 20 steps)', (spacing) => {
    // r = 50 is even, so the RK midpoints c + h equal d − h and the oracle sees the sample at its own timestep
    const s = make({ timestepSpacing: spacing });
    s.setTimesteps(20);
    const ac = s.alphasCumprod;
    const x0 = Rng.forKey(1, 'x0').normalTensor(SHAPE);
    const eps = Rng.forKey(1, 'eps').normalTensor(SHAPE);
    const onTrajectory = (a: number): tf.Tensor => tf.tidy(() => tf.add(tf.mul(Math.sqrt(a), x0), tf.mul(Math.sqrt(1 - a), eps)));
    let x = onTrajectory(ac[s.timesteps[0]!]!);
    for (const t of s.timesteps) {
      const next = tf.tidy(() => {
        const a = ac[t]!;
        return s.step(tf.div(tf.sub(x, tf.mul(Math.sqrt(a), x0)), Math.sqrt(1 - a)), t, x).prevSample;
      });
      x.dispose();
      x = next;
    }
    const expected = onTrajectory(ac[0]!);
    expectClose(x, expected, { name: `F-PNDM ${spacing} final sample`, rtol: 2e-5 });
    tf.dispose([x, expected, x0, eps]);
    s.dispose();
  });

  it.each([1, 3, 4, 5, 11, 12, 13])('resumes exactly from a JSON round trip of getState() after %i calls', (k) => {
    const a = make();
    a.setTimesteps(8);
    const x = Rng.forKey(3, 'x').normalTensor(SHAPE);
    const full = chain(a, x, 9);
    a.setTimesteps(8);
    const part = chain(a, x, 9, 0, k);
    const state = JSON.parse(JSON.stringify(a.getState()));
    a.dispose();
    const b = make();
    b.setState(state);
    const resumed = chain(b, part, 9, k);
    expectClose(resumed, full, { name: `resume after ${k}`, atol: 0 });
    tf.dispose([x, full, part, resumed]);
    b.dispose();
  });

  it('treats batch items independently', () => {
    const s = make({ predictionType: 'v_prediction' });
    s.setTimesteps(6);
    const x = Rng.forKey(4, 'x').normalTensor(SHAPE);
    const m = (i: number) => Rng.forKey(4, 'model', i).normalTensor(SHAPE);
    const run = (rows: number[]): tf.Tensor => {
      s.setTimesteps(6);
      let y = tf.gather(x, rows);
      s.timesteps.forEach((t, i) => {
        const next = tf.tidy(() => s.step(tf.gather(m(i), rows), t, y).prevSample);
        y.dispose();
        y = next;
      });
      return y;
    };
    const both = run([0, 1]);
    const singles = [run([0]), run([1])];
    const parts = tf.concat(singles);
    expectClose(both, parts, { name: 'batch vs single', atol: 1e-6 });
    tf.dispose([x, both, parts, ...singles]);
    s.dispose();
  });

  it('leaks no tensors over full chains; live history is flat once PLMS runs', async () => {
    const s = make();
    const x = Rng.forKey(6, 'x').normalTensor(SHAPE);
    await expectNoTensorLeak(() => {
      s.setTimesteps(7);
      tf.dispose(chain(s, x, 3));
    }, { name: 'F-PNDM chain' });
    s.setTimesteps(10);
    const counts: number[] = [];
    let y = x.clone();
    for (let i = 0; i < s.timesteps.length; i++) {
      const next = tf.tidy(() => s.step(Rng.forKey(3, i).normalTensor(SHAPE), s.timesteps[i]!, y).prevSample);
      y.dispose();
      y = next;
      counts.push(tf.memory().numTensors);
    }
    expect(new Set(counts.slice(12)).size).toBe(1);
    expect(Math.max(...counts) - counts[counts.length - 1]!).toBeLessThanOrEqual(2); // ≤ cur sample + RK accumulator
    s.dispose();
    y.dispose();
    x.dispose();
  });
});
