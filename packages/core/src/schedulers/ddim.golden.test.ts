import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { describeBackends } from '../testing/backends';
import { describeGolden, goldenArray, readGoldenJson, type GoldenArray } from '../testing/golden';
import { expectClose } from '../testing/expectClose';
import { DDIMScheduler } from './ddim';

interface DdimStep {
  num_inference_steps: number;
  step_index: number;
  timestep: number;
  prev_timestep: number;
  alpha_prod_t: number;
  alpha_prod_t_prev: number;
  eta: number;
  sample: GoldenArray;
  model_output: GoldenArray;
  prev_sample: GoldenArray;
  pred_original_sample: GoldenArray;
}
interface DdimSection {
  config: Record<string, unknown>;
  timesteps?: Record<string, number[]>;
  steps: DdimStep[];
}

const tensor = (a: GoldenArray): tf.Tensor => {
  const { shape, data } = goldenArray(a);
  return tf.tensor(data, shape, 'float32');
};

describeGolden('schedulers.json', 'DDIMScheduler vs diffusers (golden/schedulers.json ddim, ddim_epsilon)', (file) => {
  const g = readGoldenJson<{ ddim: DdimSection; ddim_epsilon: DdimSection }>(path.resolve(file));

  it('timesteps for 25 and 50 steps (leading, steps_offset 1) match exactly', () => {
    const s = DDIMScheduler.fromJson(g.ddim.config);
    for (const [n, ref] of Object.entries(g.ddim.timesteps!)) {
      s.setTimesteps(Number(n));
      expect(s.timesteps).toEqual(ref);
      expect(s.numInferenceSteps).toBe(Number(n));
    }
  });

  describeBackends('steps', () => {
    for (const section of ['ddim', 'ddim_epsilon'] as const) {
      for (const [k, step] of g[section].steps.entries()) {
        it(`${section} step ${k}: N=${step.num_inference_steps}, t=${step.timestep} → ${step.prev_timestep}`, () => {
          const s = DDIMScheduler.fromJson(g[section].config);
          s.setTimesteps(step.num_inference_steps);
          expect(s.timesteps[step.step_index]).toBe(step.timestep);
          const t = step.timestep;
          expect(s.alphasCumprod[t]).toBe(Math.fround(step.alpha_prod_t));
          const prevT = t - Math.floor(1000 / step.num_inference_steps);
          expect(prevT).toBe(step.prev_timestep);
          expect(prevT >= 0 ? s.alphasCumprod[prevT] : s.finalAlphaCumprod).toBe(Math.fround(step.alpha_prod_t_prev));
          tf.tidy(() => {
            const out = s.step(tensor(step.model_output), t, tensor(step.sample), { eta: step.eta, returnPredOriginalSample: true });
            expectClose(out.prevSample, goldenArray(step.prev_sample).data, { name: `${section}[${k}].prev_sample`, shape: step.prev_sample.shape });
            expectClose(out.predOriginalSample!, goldenArray(step.pred_original_sample).data, { name: `${section}[${k}].pred_original_sample` });
          });
        });
      }
    }
  });
});
