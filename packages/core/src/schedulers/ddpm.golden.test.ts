import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { describeBackends } from '../testing/backends';
import { describeGolden, goldenArray, readGoldenJson, type GoldenArray } from '../testing/golden';
import { expectClose } from '../testing/expectClose';
import { DDPMScheduler } from './ddpm';

interface DdpmSection {
  config: Record<string, unknown>;
  add_noise: { original_samples: GoldenArray; noise: GoldenArray; timesteps: number[]; noisy_samples: GoldenArray };
  get_velocity: { sample: GoldenArray; noise: GoldenArray; timesteps: number[]; velocity: GoldenArray };
}

const tensor = (a: GoldenArray): tf.Tensor => {
  const { shape, data } = goldenArray(a);
  return tf.tensor(data, shape, 'float32');
};

describeGolden('schedulers.json', 'DDPMScheduler training helpers vs diffusers (golden/schedulers.json ddpm)', (file) => {
  const g = readGoldenJson<{ ddpm: DdpmSection }>(path.resolve(file)).ddpm;

  describeBackends('addNoise / getVelocity', () => {
    for (const kind of ['host', 'tensor'] as const) {
      const ts = (t: number[]) => (kind === 'host' ? t : tf.tensor1d(t, 'int32'));
      it(`add_noise with per-sample timesteps (${kind} timesteps)`, () => {
        const s = DDPMScheduler.fromJson(g.config);
        const a = g.add_noise;
        tf.tidy(() => {
          const out = s.addNoise(tensor(a.original_samples), tensor(a.noise), ts(a.timesteps));
          expectClose(out, goldenArray(a.noisy_samples).data, { name: 'add_noise.noisy_samples', shape: a.noisy_samples.shape });
        });
      });

      it(`get_velocity with per-sample timesteps (${kind} timesteps), = getTarget for v_prediction`, () => {
        const s = DDPMScheduler.fromJson(g.config);
        const v = g.get_velocity;
        tf.tidy(() => {
          const out = s.getVelocity(tensor(v.sample), tensor(v.noise), ts(v.timesteps));
          expectClose(out, goldenArray(v.velocity).data, { name: 'get_velocity.velocity', shape: v.velocity.shape });
          const target = s.getTarget(tensor(v.sample), tensor(v.noise), ts(v.timesteps));
          expectClose(target, goldenArray(v.velocity).data, { name: 'getTarget(v_prediction)' });
        });
      });
    }
  });
});
