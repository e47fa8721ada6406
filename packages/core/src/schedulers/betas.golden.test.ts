import * as path from 'node:path';
import { describeGolden, goldenArray, readGoldenJson, type GoldenArray } from '../testing/golden';
import { expectClose } from '../testing/expectClose';
import { trainSchedule } from './betas';
import { SCHEDULER_DEFAULTS, schedulerConfigFromJson } from './schedulerConfig';

interface TrainScheduleGolden {
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: string;
  betas: GoldenArray;
  alphas_cumprod: GoldenArray;
  alphas_cumprod_selected: { index: number; value: number }[];
  final_alpha_cumprod: number;
}

describeGolden('schedulers.json', 'train schedule vs diffusers (golden/schedulers.json train_schedule)', (file) => {
  const g = readGoldenJson<{ train_schedule: TrainScheduleGolden; ddim: { config: Record<string, unknown> } }>(path.resolve(file));
  const t = g.train_schedule;
  const config = schedulerConfigFromJson('DDIMScheduler', {
    num_train_timesteps: t.num_train_timesteps, beta_start: t.beta_start, beta_end: t.beta_end, beta_schedule: t.beta_schedule,
  });
  const ours = trainSchedule(config);

  it('betas equal the float32 reference bit for bit (aarch64 torch.linspace with FMA)', () => {
    const ref = goldenArray(t.betas).data;
    expect(ours.betas).toHaveLength(ref.length);
    const mismatches = ref.filter((v, i) => v !== ours.betas[i]).length;
    expect(mismatches).toBe(0);
  });

  it('alphas_cumprod equal the reference bit for bit, incl. the selected entries and final_alpha_cumprod', () => {
    const ref = goldenArray(t.alphas_cumprod).data;
    expectClose(ours.alphasCumprod, ref, { name: 'alphas_cumprod', atol: 0 });
    for (const { index, value } of t.alphas_cumprod_selected) expect(ours.alphasCumprod[index]).toBe(Math.fround(value));
    expect(ours.alphasCumprod[0]).toBe(Math.fround(t.final_alpha_cumprod));
  });

  it('the DDIM section config resolves to the same schedule', () => {
    const ddim = trainSchedule(schedulerConfigFromJson('DDIMScheduler', g.ddim.config));
    expect(Array.from(ddim.alphasCumprod)).toEqual(Array.from(ours.alphasCumprod));
    expect(SCHEDULER_DEFAULTS.DDIMScheduler.betaSchedule).toBe('linear'); // the file, not the default, chose scaled_linear
  });
});
