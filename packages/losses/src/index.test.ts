import * as api from './index';

describe('@aptp/losses public API', () => {
  it('exports exactly this list', () => {
    expect(Object.keys(api).sort()).toEqual(
      [
        'BLOCK_KEYS',
        'CONTRASTIVE_DEFAULTS',
        'LOSS_TERMS',
        'RESOURCE_LOSS_TYPES',
        'binaryCrossEntropy',
        'blockDistillationLoss',
        'contrastiveLoss',
        'contrastiveLossSchema',
        'contrastiveSimilarities',
        'defaultLossesConfig',
        'diffusionLoss',
        'diffusionLossSchema',
        'distillationLoss',
        'lossWeights',
        'lossesConfigSchema',
        'maxLoss',
        'minSnrWeights',
        'objective',
        'perSampleMse',
        'readObjective',
        'resourceLoss',
        'resourceLossSchema',
        'snrFromAlphasCumprod',
        'stdLoss',
      ].sort(),
    );
  });
});
