/**
 * Builds a sampler from a diffusers `scheduler_config.json`. The only dispatch is this table from class name to
 * constructor (STYLE.md §3). The class comes from the file's `_class_name` unless `className` overrides it — APTP
 * evaluates with a PNDM sampler built from SD 2.1's DDIM config (APTP.md §9).
 */
import { ConfigError } from '../errors';
import { DDIMScheduler } from './ddim';
import { DDPMScheduler } from './ddpm';
import { DPMSolverMultistepScheduler } from './dpmSolver';
import { PNDMScheduler } from './pndm';
import type { Scheduler } from './scheduler';
import { readSchedulerConfigFile, schedulerConfigFromJson, type SchedulerConfig } from './schedulerConfig';

export type SamplerClassName = 'DDIMScheduler' | 'PNDMScheduler' | 'DPMSolverMultistepScheduler';

const SAMPLERS: Record<SamplerClassName, (config: SchedulerConfig, file?: string) => Scheduler> = {
  DDIMScheduler: (c, file) => new DDIMScheduler(c, { file }),
  PNDMScheduler: (c, file) => new PNDMScheduler(c, { file }),
  DPMSolverMultistepScheduler: (c, file) => new DPMSolverMultistepScheduler(c, { file }),
};

export const SAMPLER_CLASS_NAMES = Object.keys(SAMPLERS) as SamplerClassName[];

function samplerName(name: string | undefined, file?: string): SamplerClassName {
  if (name !== undefined && name in SAMPLERS) return name as SamplerClassName;
  throw new ConfigError('unsupported scheduler class', {
    code: 'E_CONFIG_VALUE', file, field: '_class_name', expected: SAMPLER_CLASS_NAMES.join(' | '), found: name ?? 'missing',
  });
}

/** A sampler from a snake_case config object (`_class_name` inside, or `className`). */
export function createScheduler(raw: Record<string, unknown>, options: { className?: SamplerClassName; file?: string } = {}): Scheduler {
  const name = samplerName(options.className ?? (typeof raw._class_name === 'string' ? raw._class_name : undefined), options.file);
  return SAMPLERS[name](schedulerConfigFromJson(name, raw, { file: options.file }), options.file);
}

/**
 * A sampler from `scheduler_config.json`, a scheduler folder or a pipeline folder (`<dir>/scheduler/`).
 * `className` overrides the file's `_class_name` (fields of other classes are then ignored, as in diffusers).
 */
export function loadScheduler(location: string, options: { className?: SamplerClassName } = {}): Scheduler {
  const { file, className, raw } = readSchedulerConfigFile(location);
  return createScheduler(raw, { className: options.className ?? samplerName(className, file), file });
}

/** The DDPM training helpers (`addNoise`, `getVelocity`, `snr`, targets) from the same file, whatever its class. */
export function loadNoiseSchedule(location: string): DDPMScheduler {
  const { file, raw } = readSchedulerConfigFile(location);
  return new DDPMScheduler(schedulerConfigFromJson('DDPMScheduler', raw, { file }), { file });
}
