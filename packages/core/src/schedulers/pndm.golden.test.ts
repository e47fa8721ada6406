import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { describeBackends } from '../testing/backends';
import { describeGolden, goldenArray, readGoldenJson, type GoldenArray } from '../testing/golden';
import { expectClose } from '../testing/expectClose';
import { expectNoTensorLeak } from '../testing/leaks';
import { PNDMScheduler } from './pndm';

interface ChainStep {
  index: number;
  timestep: number;
  sample: GoldenArray;
  model_output: GoldenArray;
  prev_sample: GoldenArray;
}
interface PndmSection {
  config: Record<string, unknown>;
  timesteps: Record<string, number[]>;
  chain: { num_inference_steps: number; timesteps: number[]; steps: ChainStep[] };
}

const tensor = (a: GoldenArray): tf.Tensor => {
  const { shape, data } = goldenArray(a);
  return tf.tensor(data, shape, 'float32');
};

describeGolden('schedulers.json', 'PNDMScheduler (PLMS) vs diffusers (golden/schedulers.json pndm)', (file) => {
  const g = readGoldenJson<{ pndm: PndmSection }>(path.resolve(file)).pndm;

  it('timesteps for 25 and 50 steps match exactly (second entry repeated)', () => {
    const s = PNDMScheduler.fromJson(g.config);
    for (const [n, ref] of Object.entries(g.timesteps)) {
      s.setTimesteps(Number(n));
      expect(s.timesteps).toEqual(ref);
    }
  });

  describeBackends('full 25-step chain', () => {
    it('replays every step from index 0 (fed the reference sample) and matches each prev_sample', () => {
      const s = PNDMScheduler.fromJson(g.config);
      s.setTimesteps(g.chain.num_inference_steps);
      expect(s.timesteps).toEqual(g.chain.timesteps);
      for (const step of g.chain.steps) {
        expect(s.timesteps[step.index]).toBe(step.timestep);
        tf.tidy(() => {
          const out = s.step(tensor(step.model_output), step.timestep, tensor(step.sample));
          expectClose(out.prevSample, goldenArray(step.prev_sample).data, { name: `pndm.chain[${step.index}].prev_sample` });
        });
      }
      s.dispose();
    });

    it('runs the chain on its own outputs (sample of step i = our prev_sample of step i−1) within tolerance', () => {
      const s = PNDMScheduler.fromJson(g.config);
      s.setTimesteps(g.chain.num_inference_steps);
      let x = tensor(g.chain.steps[0]!.sample);
      for (const step of g.chain.steps) {
        const next = tf.tidy(() => s.step(tensor(step.model_output), step.timestep, x).prevSample);
        x.dispose();
        x = next;
        expectClose(x, goldenArray(step.prev_sample).data, { name: `pndm.chain(own)[${step.index}]` });
      }
      x.dispose();
      s.dispose();
    });

    it('leaves no tensors behind after a full chain and dispose()', async () => {
      const s = PNDMScheduler.fromJson(g.config);
      await expectNoTensorLeak(() => {
        s.setTimesteps(g.chain.num_inference_steps);
        for (const step of g.chain.steps.slice(0, 8)) {
          tf.tidy(() => {
            s.step(tensor(step.model_output), step.timestep, tensor(step.sample));
          });
        }
        s.dispose();
      }, { name: 'PNDM chain' });
    });
  });
});
