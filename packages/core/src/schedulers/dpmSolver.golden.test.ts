import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { describeBackends } from '../testing/backends';
import { describeGolden, goldenArray, readGoldenJson, type GoldenArray } from '../testing/golden';
import { expectClose } from '../testing/expectClose';
import { DPMSolverMultistepScheduler } from './dpmSolver';

interface ChainStep {
  index: number;
  timestep: number;
  sample: GoldenArray;
  model_output: GoldenArray;
  prev_sample: GoldenArray;
}
interface DpmSection {
  config: Record<string, unknown>;
  timesteps: Record<string, number[]>;
  sigmas: Record<string, number[]>;
  timesteps_other_spacings: Record<string, Record<string, number[]>>;
  chain: { num_inference_steps: number; timesteps: number[]; steps: ChainStep[] };
}

const tensor = (a: GoldenArray): tf.Tensor => {
  const { shape, data } = goldenArray(a);
  return tf.tensor(data, shape, 'float32');
};

describeGolden('schedulers.json', 'DPMSolverMultistepScheduler (DPM-Solver++ 2M) vs diffusers (golden/schedulers.json dpm_solver_multistep)', (file) => {
  const g = readGoldenJson<{ dpm_solver_multistep: DpmSection }>(path.resolve(file)).dpm_solver_multistep;

  it('timesteps (leading, 25 and 50) match exactly, and σ_i match the float32 reference', () => {
    const s = DPMSolverMultistepScheduler.fromJson(g.config);
    for (const [n, ref] of Object.entries(g.timesteps)) {
      s.setTimesteps(Number(n));
      expect(s.timesteps).toEqual(ref);
      const sigmas = g.sigmas[n]!;
      expect(s.sigmas).toHaveLength(sigmas.length);
      expectClose(s.sigmas, Float32Array.from(sigmas), { name: `sigmas[${n}]`, rtol: 1e-6 });
      expect(s.sigmas[sigmas.length - 1]).toBe(0);
    }
  });

  it('timesteps with "linspace" and "trailing" spacing match exactly', () => {
    for (const [spacing, lists] of Object.entries(g.timesteps_other_spacings)) {
      const s = DPMSolverMultistepScheduler.fromJson({ ...g.config, timestep_spacing: spacing });
      for (const [n, ref] of Object.entries(lists)) {
        s.setTimesteps(Number(n));
        expect([spacing, n, s.timesteps]).toEqual([spacing, n, ref]);
      }
    }
  });

  describeBackends('full 25-step chain', () => {
    it('replays every step from index 0 and matches each prev_sample (incl. the final σ = 0 step)', () => {
      const s = DPMSolverMultistepScheduler.fromJson(g.config);
      s.setTimesteps(g.chain.num_inference_steps);
      expect(s.timesteps).toEqual(g.chain.timesteps);
      for (const step of g.chain.steps) {
        expect(s.timesteps[step.index]).toBe(step.timestep);
        tf.tidy(() => {
          const out = s.step(tensor(step.model_output), step.timestep, tensor(step.sample));
          expectClose(out.prevSample, goldenArray(step.prev_sample).data, { name: `dpm.chain[${step.index}].prev_sample` });
        });
      }
      s.dispose();
    });

    it('runs the chain on its own outputs within tolerance', () => {
      const s = DPMSolverMultistepScheduler.fromJson(g.config);
      s.setTimesteps(g.chain.num_inference_steps);
      let x = tensor(g.chain.steps[0]!.sample);
      for (const step of g.chain.steps) {
        const next = tf.tidy(() => s.step(tensor(step.model_output), step.timestep, x).prevSample);
        x.dispose();
        x = next;
        expectClose(x, goldenArray(step.prev_sample).data, { name: `dpm.chain(own)[${step.index}]` });
      }
      x.dispose();
      s.dispose();
    });
  });
});
