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
