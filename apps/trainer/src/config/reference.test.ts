import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from '@aptp/core';
import { parseFinetuneConfig, parsePruneConfig, referenceDefaults } from './reference';

describe('reference defaults', () => {
  it('pruning stage = APTP.md §1.3 (configs/pruning/sd-2-1_cc3m.yaml)', () => {
    const { prune } = referenceDefaults();
    expect(prune.seed).toBe(43);
    expect(prune.training).toMatchObject({ trainBatchSize: 64, maxTrainSteps: 5000, hypernetPretrainingSteps: 500 });
    expect(prune.model.router).toMatchObject({
      numCodes: 8,
      temperature: 0.4,
      base: 3,
      depthOrder: [-1, -2, 0, 1, -3, -4, 2, 3, -5, -6, 4, 5, -7, 6],
      nonZeroWidth: true,
      optimalTransport: true,
      sinkhornEpsilon: 0.05,
      sinkhornIterations: 3,
      linearBias: true,
      singleArchParam: false,
      inputDim: 768,
    });
    const l = prune.training.losses;
    expect(l.diffusionLoss).toEqual({ weight: 1, snrGamma: 5 });
    expect(l.resourceLoss).toEqual({ weight: 2, type: 'log', pruningTarget: 0.6 });
    expect(l.contrastiveLoss).toEqual({ weight: 100, archVectorTemperature: 0.03, promptEmbeddingTemperature: 0.03 });
    expect([l.distillationLoss.weight, l.blockLoss.weight, l.stdLoss.weight, l.maxLoss.weight]).toEqual([0.2, 0.2, 0.1, 0.1]);
    expect(prune.training.optim).toMatchObject({
      adamBeta1: 0.9,
      adamBeta2: 0.999,
      adamEpsilon: 1e-8,
      adamWeightDecay: 0,
      hypernetLearningRate: 2e-4,
      quantizerLearningRate: 2e-4,
      unetLearningRate: 5e-5,
      scaleLr: true,
      lrScheduler: 'constant_with_warmup',
      lrWarmupSteps: 100,
      maxGradNorm: null,
    });
    expect(prune.baseline).toBe('none');
  });

  it('fine-tuning stage = APTP.md §1.5 (CC3M)', () => {
    const { finetune } = referenceDefaults();
    expect(finetune.training).toMatchObject({ trainBatchSize: 128, maxTrainSteps: 30000 });
    expect(finetune.training.losses.diffusionLoss).toEqual({ weight: 0.01, snrGamma: 5 });
    expect(finetune.training.losses.distillationLoss.weight).toBe(0.5);
    expect(finetune.training.losses.blockLoss.weight).toBe(0.5);
    expect(finetune.training.optim).toMatchObject({ unetLearningRate: 1e-5, adamWeightDecay: 0, lrScheduler: 'constant_with_warmup', lrWarmupSteps: 250, scaleLr: true });
  });

  it('config errors name the full field path', () => {
    const fail = (f: () => unknown): ConfigError => {
      try {
        f();
      } catch (e) {
        return e as ConfigError;
      }
      throw new Error('expected a ConfigError');
    };
    const e1 = fail(() => parsePruneConfig({ training: { losses: { resourceLoss: { pruningTarget: 1.5 } } } }, 'p.yaml'));
    expect(e1).toBeInstanceOf(ConfigError);
    expect(e1.field).toBe('training.losses.resourceLoss.pruningTarget');
    expect(e1.message).toContain('p.yaml');
    const e2 = fail(() => parsePruneConfig({ model: { router: { numCodez: 4 } } }));
    expect(e2.field).toBe('model.router.numCodez');
    const e3 = fail(() => parseFinetuneConfig({ training: { losses: { resourceLoss: { weight: 2 } } } }));
    expect(e3.field).toBe('training.losses.resourceLoss');
    const e4 = fail(() => parsePruneConfig({ data: { dataset: { format: 'synthetic', imageSize: 'big' } } }));
    expect(e4.field).toBe('data.dataset.imageSize');
  });
});

describe('configs/*.yaml', () => {
  const dir = path.join(__dirname, '../../configs');
  const read = (f: string): unknown => parseYaml(fs.readFileSync(path.join(dir, f), 'utf8'));
  it('every prune and finetune config file validates; the reference files keep the reference values', () => {
    const files = fs.readdirSync(dir).filter((f) => /^(prune|finetune)\..*\.yaml$/.test(f));
    expect(files.length).toBeGreaterThanOrEqual(6);
    for (const f of files) (f.startsWith('prune') ? parsePruneConfig : parseFinetuneConfig)(read(f), f);
    const cc3m = parsePruneConfig(read('prune.sd21-cc3m.yaml'));
    expect(cc3m.training).toEqual(referenceDefaults().prune.training);
    expect(cc3m.model.router).toEqual(referenceDefaults().prune.model.router);
    const coco = parseFinetuneConfig(read('finetune.sd21-coco.yaml'));
    expect([coco.training.losses.diffusionLoss.weight, coco.training.losses.distillationLoss.weight, coco.training.losses.blockLoss.weight]).toEqual([1, 0.2, 0.2]);
    const synthetic = parsePruneConfig(read('prune.synthetic.yaml'));
    expect(synthetic.model.router.numCodes).toBe(4);
    expect(synthetic.training.losses.resourceLoss.pruningTarget).toBe(0.6);
  });
});
