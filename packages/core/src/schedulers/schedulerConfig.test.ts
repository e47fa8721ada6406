import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ConfigError, InputError } from '../errors';
import { DDIMScheduler } from './ddim';
import { DPMSolverMultistepScheduler } from './dpmSolver';
import { loadNoiseSchedule, loadScheduler } from './loadScheduler';
import { PNDMScheduler } from './pndm';
import {
  SCHEDULER_DEFAULTS, camelCase, readSchedulerConfigFile, resolveSchedulerConfig, schedulerConfigFromJson, schedulerConfigToJson, snakeCase,
} from './schedulerConfig';

/** stabilityai/stable-diffusion-2-1 `scheduler/scheduler_config.json` (public model card file). */
const SD21_FILE = {
  _class_name: 'DDIMScheduler',
  _diffusers_version: '0.8.0',
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  beta_start: 0.00085,
  clip_sample: false,
  num_train_timesteps: 1000,
  prediction_type: 'v_prediction',
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  trained_betas: null,
};

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'aptp-sched-'));
}

describe('scheduler config', () => {
  it('maps snake_case to camelCase once, ignoring "_" keys, and fills the class defaults', () => {
    const c = schedulerConfigFromJson('DDIMScheduler', SD21_FILE);
    expect(c.predictionType).toBe('v_prediction');
    expect(c.betaSchedule).toBe('scaled_linear');
    expect(c.stepsOffset).toBe(1);
    expect(c.setAlphaToOne).toBe(false);
    expect(c.clipSample).toBe(false);
    expect(c.timestepSpacing).toBe('leading'); // DDIM default
    expect(snakeCase('lambdaMinClipped')).toBe('lambda_min_clipped');
    expect(camelCase('rescale_betas_zero_snr')).toBe('rescaleBetasZeroSnr');
  });

  it('uses each class\'s own diffusers defaults', () => {
    expect(schedulerConfigFromJson('DPMSolverMultistepScheduler', {}).timestepSpacing).toBe('linspace');
    expect(schedulerConfigFromJson('DDIMScheduler', {}).setAlphaToOne).toBe(true);
    expect(schedulerConfigFromJson('DDIMScheduler', {}).clipSample).toBe(true);
    expect(schedulerConfigFromJson('PNDMScheduler', { skip_prk_steps: true }).setAlphaToOne).toBe(false);
    expect(schedulerConfigFromJson('DDPMScheduler', {}).varianceType).toBe('fixed_small');
    expect(SCHEDULER_DEFAULTS.DPMSolverMultistepScheduler.lambdaMinClipped).toBe(-Infinity);
  });

  it('builds PNDM from SD 2.1\'s DDIM file (fields of other classes are ignored, as diffusers does)', () => {
    const c = schedulerConfigFromJson('PNDMScheduler', SD21_FILE);
    expect(c.skipPrkSteps).toBe(true);
    expect(c.clipSample).toBe(SCHEDULER_DEFAULTS.PNDMScheduler.clipSample); // not read by PNDM
    const s = PNDMScheduler.fromJson(SD21_FILE);
    s.setTimesteps(25);
    expect(s.timesteps.slice(0, 4)).toEqual([961, 921, 921, 881]);
  });

  it('rejects an unknown field, naming it and its value', () => {
    expect(() => schedulerConfigFromJson('DDIMScheduler', { ...SD21_FILE, beta_shedule: 'linear' }, { file: 'scheduler_config.json' }))
      .toThrow(/^scheduler_config\.json: beta_shedule: unknown scheduler config field.*found "linear"/);
  });

  it.each([
    ['beta_schedule', 'sigmoid', /beta_schedule: unsupported value: expected "linear" \| "scaled_linear" \| "squaredcos_cap_v2", found "sigmoid"/],
    ['prediction_type', 'flow', /prediction_type.*found "flow"/],
    ['timestep_spacing', 'karras', /timestep_spacing.*found "karras"/],
    ['num_train_timesteps', 10.5, /num_train_timesteps.*found 10.5/],
    ['steps_offset', -1, /steps_offset.*found -1/],
    ['clip_sample', 'no', /clip_sample.*found "no"/],
  ])('rejects %s = %p with a ConfigError naming field and value', (field, value, message) => {
    const run = () => schedulerConfigFromJson('DDIMScheduler', { ...SD21_FILE, [field]: value });
    expect(run).toThrow(ConfigError);
    expect(run).toThrow(message);
  });

  it.each([
    ['DDIMScheduler', { thresholding: true }, /thresholding.*found true/],
    ['PNDMScheduler', { skip_prk_steps: true, prediction_type: 'sample' }, /prediction_type.*found "sample"/],
    ['DPMSolverMultistepScheduler', { algorithm_type: 'sde-dpmsolver++' }, /algorithm_type.*found "sde-dpmsolver\+\+"/],
    ['DPMSolverMultistepScheduler', { use_karras_sigmas: true }, /use_karras_sigmas.*found true/],
    ['DPMSolverMultistepScheduler', { variance_type: 'learned_range' }, /variance_type.*found "learned_range"/],
    ['DPMSolverMultistepScheduler', { algorithm_type: 'dpmsolver' }, /final_sigmas_type.*found "zero"/],
  ] as const)('%s rejects unsupported %p', (cls, over, message) => {
    expect(() => schedulerConfigFromJson(cls, over)).toThrow(message);
  });

  it('validates camelCase configs given in code the same way', () => {
    expect(() => new DDIMScheduler({ predictionType: 'x0' as never })).toThrow(/prediction_type.*found "x0"/);
    expect(() => new DDIMScheduler({ trainedBetas: [0.1, 0.2] })).toThrow(/trained_betas.*2 values/);
    expect(resolveSchedulerConfig('DDIMScheduler', { stepsOffset: 1 }).stepsOffset).toBe(1);
  });

  it('writes the config back as diffusers does (snake_case, only the class fields) and reads it again', () => {
    const c = schedulerConfigFromJson('DPMSolverMultistepScheduler', { ...SD21_FILE, timestep_spacing: 'leading' });
    const json = schedulerConfigToJson('DPMSolverMultistepScheduler', c);
    expect(json._class_name).toBe('DPMSolverMultistepScheduler');
    expect(json.lambda_min_clipped).toBe('-inf');
    expect(json).not.toHaveProperty('skip_prk_steps');
    expect(schedulerConfigFromJson('DPMSolverMultistepScheduler', JSON.parse(JSON.stringify(json)))).toEqual(c);
  });

  it('reads scheduler_config.json from a file, a folder or a pipeline folder, incl. Python\'s -Infinity', () => {
    const dir = tmpDir();
    fs.mkdirSync(path.join(dir, 'scheduler'));
    const text = JSON.stringify({ ...SD21_FILE, _class_name: 'DPMSolverMultistepScheduler', lambda_min_clipped: 'X' }, null, 2)
      .replace('"X"', '-Infinity');
    fs.writeFileSync(path.join(dir, 'scheduler', 'scheduler_config.json'), text);
    const f = readSchedulerConfigFile(dir);
    expect(f.className).toBe('DPMSolverMultistepScheduler');
    expect(f.raw.lambda_min_clipped).toBe('-inf');
    const s = loadScheduler(dir);
    expect(s).toBeInstanceOf(DPMSolverMultistepScheduler);
    expect(s.config.lambdaMinClipped).toBe(-Infinity);
    expect(loadScheduler(path.join(dir, 'scheduler'), { className: 'PNDMScheduler' })).toBeInstanceOf(PNDMScheduler);
    expect(loadNoiseSchedule(path.join(dir, 'scheduler', 'scheduler_config.json')).config.predictionType).toBe('v_prediction');
    expect(() => loadScheduler(path.join(dir, 'missing'))).toThrow(InputError);
    fs.writeFileSync(path.join(dir, 'scheduler', 'scheduler_config.json'), JSON.stringify({ ...SD21_FILE, _class_name: 'EulerDiscreteScheduler' }));
    expect(() => loadScheduler(dir)).toThrow(/_class_name.*found EulerDiscreteScheduler/);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
