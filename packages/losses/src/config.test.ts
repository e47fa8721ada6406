import { defaultLossesConfig, lossesConfigSchema } from './config';
import { lossWeights } from './objective';

describe('losses config', () => {
  it('defaults to the reference pruning-stage values (APTP.md §1.3)', () => {
    expect(defaultLossesConfig()).toEqual({
      diffusionLoss: { weight: 1, snrGamma: 5 },
      resourceLoss: { weight: 2, type: 'log', pruningTarget: 0.6 },
      contrastiveLoss: { weight: 100, archVectorTemperature: 0.03, promptEmbeddingTemperature: 0.03 },
      distillationLoss: { weight: 0.2 },
      blockLoss: { weight: 0.2 },
      stdLoss: { weight: 0.1 },
      maxLoss: { weight: 0.1 },
    });
    expect(lossWeights(defaultLossesConfig())).toEqual({ diffusion: 1, resource: 2, contrastive: 100, distillation: 0.2, block: 0.2, std: 0.1, max: 0.1 });
  });

  it('takes partial overrides (CC3M fine-tuning weights, APTP.md §1.5) and keeps the other defaults', () => {
    const c = lossesConfigSchema.parse({ diffusionLoss: { weight: 0.01 }, distillationLoss: { weight: 0.5 }, blockLoss: { weight: 0.5 } });
    expect(c.diffusionLoss).toEqual({ weight: 0.01, snrGamma: 5 });
    expect(c.blockLoss.weight).toBe(0.5);
    expect(c.resourceLoss.weight).toBe(2);
    expect(lossesConfigSchema.parse({ diffusionLoss: { snrGamma: null } }).diffusionLoss.snrGamma).toBeNull();
  });

  it('rejects unknown keys, unknown resource types and negative weights', () => {
    expect(lossesConfigSchema.safeParse({ resourceLoss: { weigth: 2 } }).success).toBe(false);
    expect(lossesConfigSchema.safeParse({ klLoss: { weight: 1 } }).success).toBe(false);
    expect(lossesConfigSchema.safeParse({ resourceLoss: { type: 'l1' } }).success).toBe(false);
    expect(lossesConfigSchema.safeParse({ maxLoss: { weight: -0.1 } }).success).toBe(false);
    expect(lossesConfigSchema.safeParse({ resourceLoss: { pruningTarget: 1.5 } }).success).toBe(false);
  });
});
