import { ConfigError } from '@aptp/core';
import { lrSchedule } from './lrSchedule';
import { optimizerConfigSchema, parseOptimizerConfig, scaledLearningRate } from './config';

describe('lr schedules (diffusers get_scheduler semantics)', () => {
  it('constant_with_warmup ramps from 0 at the first step to 1 after the warm-up', () => {
    const s = lrSchedule('constant_with_warmup', { warmupSteps: 100 });
    expect([0, 1, 50, 99, 100, 5000].map(s)).toEqual([0, 0.01, 0.5, 0.99, 1, 1]);
    expect(lrSchedule('constant_with_warmup')(0)).toBe(1);
  });

  it('constant ignores the warm-up (as diffusers does)', () => {
    expect(lrSchedule('constant', { warmupSteps: 10 })(0)).toBe(1);
  });

  it('cosine and linear decay to 0 at the last step', () => {
    const c = lrSchedule('cosine', { warmupSteps: 10, totalSteps: 110 });
    expect(c(5)).toBeCloseTo(0.5, 12);
    expect(c(10)).toBeCloseTo(1, 12);
    expect(c(60)).toBeCloseTo(0.5, 12); // half-way through the decay: 0.5·(1 + cos(π/2))
    expect(c(35)).toBeCloseTo(0.5 * (1 + Math.cos(Math.PI * 0.25)), 12);
    expect(c(110)).toBeCloseTo(0, 12);
    expect(c(200)).toBeGreaterThanOrEqual(0);
    const l = lrSchedule('linear', { warmupSteps: 0, totalSteps: 4 });
    expect([0, 1, 2, 3, 4, 5].map(l)).toEqual([1, 0.75, 0.5, 0.25, 0, 0]);
  });

  it('piecewise_constant follows diffusers step rules, with an optional warm-up ramp', () => {
    const s = lrSchedule('piecewise_constant', { stepRules: '1:10,0.1:20,0.01:30,0.005' });
    expect([0, 9, 10, 19, 20, 29, 30, 1000].map(s)).toEqual([1, 1, 0.1, 0.1, 0.01, 0.01, 0.005, 0.005]);
    expect(lrSchedule('piecewise_constant', { stepRules: '0.5' })(123)).toBe(0.5);
    const w = lrSchedule('piecewise_constant', { stepRules: '1:1100,0.35', warmupSteps: 50 });
    const reference = lrSchedule('constant_with_warmup', { warmupSteps: 50 });
    for (const k of [0, 1, 25, 49, 50, 1099]) expect(w(k)).toBe(reference(k));
    expect([1100, 2999].map(w)).toEqual([0.35, 0.35]);
  });

  it('names the step rules when they are missing or malformed', () => {
    expect(() => lrSchedule('piecewise_constant')).toThrow(/lrStepRules: lr step rules: piecewise_constant needs them/);
    for (const bad of ['1:10,x', '1:0,0.5', '1:10:3,0.5', '1:20,0.5:10,0.1', '-1', '1:1.5,0.2', ':10,0.1']) {
      expect(() => lrSchedule('piecewise_constant', { stepRules: bad })).toThrow(ConfigError);
    }
  });

  it('asks for the total steps when a decaying schedule lacks them', () => {
    expect(() => lrSchedule('cosine', { warmupSteps: 1 })).toThrow(ConfigError);
    expect(() => lrSchedule('cosine')).toThrow(/maxTrainSteps: lr scheduler "cosine" needs the total number of steps/);
  });
});

describe('optimizer config', () => {
  it('defaults to the reference pruning values (APTP.md §1.3)', () => {
    expect(optimizerConfigSchema.parse({})).toEqual({
      adamBeta1: 0.9,
      adamBeta2: 0.999,
      adamEpsilon: 1e-8,
      adamWeightDecay: 0,
      scaleLr: true,
      lrScheduler: 'constant_with_warmup',
      lrWarmupSteps: 100,
      maxGradNorm: null,
    });
  });

  it('names the bad field', () => {
    expect(() => parseOptimizerConfig({ lrScheduler: 'cosine_annealing' as never })).toThrow(/optim\.lrScheduler/);
    expect(() => parseOptimizerConfig({ adamBeta2: 1 })).toThrow(ConfigError);
    expect(() => parseOptimizerConfig({ adamBetas: 1 } as never)).toThrow(/optim\.adamBetas/);
  });

  it('scale_lr multiplies by √(accumulation × batch × processes): 2e-4 at 64 × 2 GPUs → 2.26e-3', () => {
    expect(scaledLearningRate(2e-4, true, { batchSize: 64, numProcesses: 2 })).toBeCloseTo(2e-4 * 11.3137085, 9);
    expect(scaledLearningRate(2e-4, false, { batchSize: 64 })).toBe(2e-4);
    expect(scaledLearningRate(1e-5, true, { batchSize: 8, gradientAccumulationSteps: 2 })).toBeCloseTo(4e-5, 12);
  });
});
