/**
 * Scheduler configuration: diffusers' `scheduler/scheduler_config.json` (snake_case, read as is) mapped once to a
 * camelCase `SchedulerConfig` (STYLE.md §3 Config). The zod schema knows every field of the four diffusers classes we
 * implement; a field nobody knows, or a value we do not implement, is a `ConfigError` naming the field and the value.
 * `_` keys (`_class_name`, `_diffusers_version`) are metadata and ignored.
 *
 * As in diffusers' `from_config`, a field that belongs to another scheduler class is accepted and ignored: Stable
 * Diffusion 2.1 ships a DDIMScheduler config (with `clip_sample`, and PNDM's `skip_prk_steps`), and APTP evaluates
 * with a PNDMScheduler built from that same file (APTP.md §9, §11).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { ConfigError, InputError } from '../errors';
import { BETA_SCHEDULES, BetaSchedule } from './betas';

export type SchedulerClassName = 'DDIMScheduler' | 'PNDMScheduler' | 'DPMSolverMultistepScheduler' | 'DDPMScheduler';
export const SCHEDULER_CLASS_NAMES: readonly SchedulerClassName[] = ['DDIMScheduler', 'PNDMScheduler', 'DPMSolverMultistepScheduler', 'DDPMScheduler'];

export type PredictionType = 'epsilon' | 'v_prediction' | 'sample';
export type TimestepSpacing = 'leading' | 'linspace' | 'trailing';
export type DdpmVarianceType = 'fixed_small' | 'fixed_small_log' | 'fixed_large' | 'fixed_large_log' | 'learned' | 'learned_range';

/** Every field of the supported diffusers schedulers, camelCase. Each class reads the subset in `CLASS_FIELDS`. */
export interface SchedulerConfig {
  numTrainTimesteps: number;
  betaStart: number;
  betaEnd: number;
  betaSchedule: BetaSchedule;
  trainedBetas: number[] | null;
  predictionType: PredictionType;
  timestepSpacing: TimestepSpacing;
  stepsOffset: number;
  rescaleBetasZeroSnr: boolean;
  // DDIM / DDPM
  clipSample: boolean;
  clipSampleRange: number;
  setAlphaToOne: boolean;
  thresholding: boolean;
  dynamicThresholdingRatio: number;
  sampleMaxValue: number;
  // PNDM
  skipPrkSteps: boolean;
  // DPM-Solver (multistep)
  solverOrder: number;
  algorithmType: 'dpmsolver++' | 'dpmsolver';
  solverType: 'midpoint' | 'heun';
  lowerOrderFinal: boolean;
  eulerAtFinal: boolean;
  useKarrasSigmas: boolean;
  useExponentialSigmas: boolean;
  useBetaSigmas: boolean;
  useLuLambdas: boolean;
  useFlowSigmas: boolean;
  flowShift: number;
  finalSigmasType: 'zero' | 'sigma_min';
  lambdaMinClipped: number;
  /** DDPM: fixed_small …; DPM-Solver: null (learned variances are not supported). */
  varianceType: DdpmVarianceType | null;
}

type Field = keyof SchedulerConfig;

// ---------------------------------------------------------------------------------------------------------------
// Defaults: diffusers 0.31 constructor defaults, per class (written once).

const COMMON_DEFAULTS = {
  numTrainTimesteps: 1000,
  betaStart: 0.0001,
  betaEnd: 0.02,
  betaSchedule: 'linear',
  trainedBetas: null,
  predictionType: 'epsilon',
  stepsOffset: 0,
  rescaleBetasZeroSnr: false,
  clipSample: true,
  clipSampleRange: 1.0,
  thresholding: false,
  dynamicThresholdingRatio: 0.995,
  sampleMaxValue: 1.0,
  skipPrkSteps: false,
  solverOrder: 2,
  algorithmType: 'dpmsolver++',
  solverType: 'midpoint',
  lowerOrderFinal: true,
  eulerAtFinal: false,
  useKarrasSigmas: false,
  useExponentialSigmas: false,
  useBetaSigmas: false,
  useLuLambdas: false,
  useFlowSigmas: false,
  flowShift: 1.0,
  finalSigmasType: 'zero',
  lambdaMinClipped: -Infinity,
} as const satisfies Partial<SchedulerConfig>;

export const SCHEDULER_DEFAULTS: Readonly<Record<SchedulerClassName, Readonly<SchedulerConfig>>> = {
  DDIMScheduler: { ...COMMON_DEFAULTS, timestepSpacing: 'leading', setAlphaToOne: true, varianceType: null },
  PNDMScheduler: { ...COMMON_DEFAULTS, timestepSpacing: 'leading', setAlphaToOne: false, varianceType: null },
  DPMSolverMultistepScheduler: { ...COMMON_DEFAULTS, timestepSpacing: 'linspace', setAlphaToOne: false, varianceType: null },
  DDPMScheduler: { ...COMMON_DEFAULTS, timestepSpacing: 'leading', setAlphaToOne: false, varianceType: 'fixed_small' },
};

const COMMON_FIELDS: Field[] = [
  'numTrainTimesteps', 'betaStart', 'betaEnd', 'betaSchedule', 'trainedBetas', 'predictionType', 'timestepSpacing', 'stepsOffset',
];
const THRESHOLD_FIELDS: Field[] = ['thresholding', 'dynamicThresholdingRatio', 'sampleMaxValue'];

/** The fields each class reads (diffusers constructor arguments). Others in the file are ignored, as diffusers does. */
export const CLASS_FIELDS: Readonly<Record<SchedulerClassName, readonly Field[]>> = {
  DDIMScheduler: [...COMMON_FIELDS, 'clipSample', 'clipSampleRange', 'setAlphaToOne', 'rescaleBetasZeroSnr', ...THRESHOLD_FIELDS],
  PNDMScheduler: [...COMMON_FIELDS, 'skipPrkSteps', 'setAlphaToOne'],
  DPMSolverMultistepScheduler: [
    ...COMMON_FIELDS, 'rescaleBetasZeroSnr', ...THRESHOLD_FIELDS, 'solverOrder', 'algorithmType', 'solverType', 'lowerOrderFinal',
    'eulerAtFinal', 'useKarrasSigmas', 'useExponentialSigmas', 'useBetaSigmas', 'useLuLambdas', 'useFlowSigmas', 'flowShift',
    'finalSigmasType', 'lambdaMinClipped', 'varianceType',
  ],
  DDPMScheduler: [...COMMON_FIELDS, 'varianceType', 'clipSample', 'clipSampleRange', 'rescaleBetasZeroSnr', ...THRESHOLD_FIELDS],
};

// ---------------------------------------------------------------------------------------------------------------
// The file schema (snake_case). Values are the ones we implement; anything else names field and value.

const minusInfinity = z.custom<number | string>(
  (v) => v === -Infinity || v === '-inf' || v === '-Infinity' || (typeof v === 'number' && Number.isFinite(v)),
  { message: 'expected a number or "-inf"' },
);

const fileSchema = z.strictObject({
  num_train_timesteps: z.number().int().min(2).describe('training steps T (SD 2.1: 1000)'),
  beta_start: z.number().gt(0).lt(1).describe('β_1 (SD 2.1: 0.00085)'),
  beta_end: z.number().gt(0).lt(1).describe('β_T (SD 2.1: 0.012)'),
  beta_schedule: z.enum(BETA_SCHEDULES as [BetaSchedule, ...BetaSchedule[]]).describe('SD 2.1: scaled_linear'),
  trained_betas: z.array(z.number().gt(0).lt(1)).nullable().describe('explicit β list'),
  prediction_type: z.enum(['epsilon', 'v_prediction', 'sample']).describe('SD 2.1 (768): v_prediction (APTP.md §11)'),
  timestep_spacing: z.enum(['leading', 'linspace', 'trailing']).describe('inference timestep spacing'),
  steps_offset: z.number().int().min(0).describe('added to leading timesteps (SD 2.1: 1)'),
  rescale_betas_zero_snr: z.boolean(),
  clip_sample: z.boolean(),
  clip_sample_range: z.number().gt(0),
  set_alpha_to_one: z.boolean().describe('ᾱ used below t = 0: 1, or ᾱ_0 (SD 2.1: false)'),
  thresholding: z.boolean(),
  dynamic_thresholding_ratio: z.number(),
  sample_max_value: z.number(),
  skip_prk_steps: z.boolean().describe('PNDM: PLMS only (SD 2.1: true)'),
  solver_order: z.number().int().min(1).max(3),
  algorithm_type: z.enum(['dpmsolver++', 'dpmsolver', 'sde-dpmsolver', 'sde-dpmsolver++']),
  solver_type: z.enum(['midpoint', 'heun']),
  lower_order_final: z.boolean(),
  euler_at_final: z.boolean(),
  use_karras_sigmas: z.boolean(),
  use_exponential_sigmas: z.boolean(),
  use_beta_sigmas: z.boolean(),
  use_lu_lambdas: z.boolean(),
  use_flow_sigmas: z.boolean(),
  flow_shift: z.number(),
  final_sigmas_type: z.enum(['zero', 'sigma_min']),
  lambda_min_clipped: minusInfinity,
  variance_type: z.enum(['fixed_small', 'fixed_small_log', 'fixed_large', 'fixed_large_log', 'learned', 'learned_range']).nullable(),
}).partial();

type FileConfig = z.infer<typeof fileSchema>;

export function snakeCase(camel: string): string {
  return camel.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

export function camelCase(snake: string): string {
  return snake.replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
}

function show(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (v === -Infinity) return '-inf';
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

function zodToConfigError(error: z.ZodError, raw: Record<string, unknown>, file?: string): ConfigError {
  const issue = error.issues[0]!;
  if (issue.code === 'unrecognized_keys') {
    const key = issue.keys[0]!;
    return new ConfigError('unknown scheduler config field', {
      code: 'E_CONFIG_FIELD', file, field: key, expected: 'a diffusers DDIM/PNDM/DPMSolverMultistep/DDPM field', found: show(raw[key]),
    });
  }
  const field = String(issue.path[0] ?? '');
  const expected = issue.code === 'invalid_value' ? issue.values.map((v) => show(v)).join(' | ') : issue.message.replace(/^Invalid input: /, '');
  return new ConfigError('unsupported value', { code: 'E_CONFIG_VALUE', file, field, expected, found: show(raw[field]), cause: error });
}

function unsupported(className: SchedulerClassName, field: Field, found: unknown, expected: string, file?: string): ConfigError {
  return new ConfigError(`${className} does not support this value`, {
    code: 'E_CONFIG_VALUE', file, field: snakeCase(field), expected, found: show(found),
  });
}

/** Class-specific support checks on the fields that class reads. */
function checkSupported(className: SchedulerClassName, c: SchedulerConfig, file?: string): void {
  const reads = new Set(CLASS_FIELDS[className]);
  if (reads.has('thresholding') && c.thresholding) throw unsupported(className, 'thresholding', true, 'false (dynamic thresholding is not implemented)', file);
  if (className === 'PNDMScheduler') {
    if (c.predictionType === 'sample') throw unsupported(className, 'predictionType', 'sample', '"epsilon" | "v_prediction"', file);
  }
  if (className === 'DPMSolverMultistepScheduler') {
    if (c.algorithmType !== 'dpmsolver++' && c.algorithmType !== 'dpmsolver') {
      throw unsupported(className, 'algorithmType', c.algorithmType, '"dpmsolver++" | "dpmsolver"', file);
    }
    for (const f of ['useKarrasSigmas', 'useExponentialSigmas', 'useBetaSigmas', 'useLuLambdas', 'useFlowSigmas'] as const) {
      if (c[f]) throw unsupported(className, f, true, 'false', file);
    }
    if (c.varianceType !== null) throw unsupported(className, 'varianceType', c.varianceType, 'null', file);
    if (c.algorithmType === 'dpmsolver' && c.finalSigmasType === 'zero') {
      // diffusers rejects this too: the first-order update divides by σ = 0.
      throw unsupported(className, 'finalSigmasType', 'zero', '"sigma_min" with algorithm_type "dpmsolver"', file);
    }
  }
}

export interface ResolveOptions {
  /** File name used in error messages. */
  file?: string;
}

/**
 * Validates a snake_case config object (as read from `scheduler_config.json`) for `className` and fills in that
 * class's defaults. `_` keys are ignored; unknown fields and unsupported values throw `ConfigError`.
 */
export function schedulerConfigFromJson(className: SchedulerClassName, raw: unknown, options: ResolveOptions = {}): SchedulerConfig {
  const { file } = options;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigError('a scheduler config must be a JSON object', { file, expected: 'object', found: show(raw) });
  }
  const input: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) if (!k.startsWith('_')) input[k] = v;
  const parsed = fileSchema.safeParse(input);
  if (!parsed.success) throw zodToConfigError(parsed.error, input, file);
  const values = parsed.data as FileConfig;
  const config: SchedulerConfig = { ...SCHEDULER_DEFAULTS[className], trainedBetas: null };
  const reads = new Set<string>(CLASS_FIELDS[className]);
  for (const [k, v] of Object.entries(values)) {
    const field = camelCase(k) as Field;
    if (v === undefined || !reads.has(field)) continue;
    if (field === 'lambdaMinClipped') config.lambdaMinClipped = typeof v === 'number' ? v : -Infinity;
    else (config as unknown as Record<string, unknown>)[field] = Array.isArray(v) ? [...v] : v;
  }
  checkSupported(className, config, file);
  return config;
}

/** The same validation for a camelCase partial config given in code (`new DDIMScheduler({ predictionType: ... })`). */
export function resolveSchedulerConfig(className: SchedulerClassName, input: Partial<SchedulerConfig> = {}, options: ResolveOptions = {}): SchedulerConfig {
  const snake: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(input)) if (v !== undefined) snake[snakeCase(k)] = v;
  return schedulerConfigFromJson(className, snake, options);
}

/** The config as diffusers writes it (snake_case, only the fields of `className`, `_class_name` first). */
export function schedulerConfigToJson(className: SchedulerClassName, config: SchedulerConfig): Record<string, unknown> {
  const out: Record<string, unknown> = { _class_name: className };
  for (const field of [...CLASS_FIELDS[className]].sort((a, b) => snakeCase(a).localeCompare(snakeCase(b)))) {
    const v = config[field];
    out[snakeCase(field)] = v === -Infinity ? '-inf' : v;
  }
  return out;
}

/** A `scheduler_config.json` read from disk: its `_class_name` (if any) and its raw object. */
export interface SchedulerConfigFile {
  file: string;
  className: string | undefined;
  raw: Record<string, unknown>;
}

/**
 * Reads `scheduler_config.json` from a file path, a scheduler folder or a pipeline folder (`<dir>/scheduler/`).
 * Python's non-JSON `-Infinity` / `Infinity` / `NaN` (diffusers writes `lambda_min_clipped` as `-Infinity`) are read.
 */
export function readSchedulerConfigFile(location: string): SchedulerConfigFile {
  const candidates = [location, path.join(location, 'scheduler_config.json'), path.join(location, 'scheduler', 'scheduler_config.json')];
  const file = candidates.find((p) => fs.existsSync(p) && fs.statSync(p).isFile());
  if (!file) {
    throw new InputError('scheduler config not found', {
      code: 'E_MISSING_FILE', file: location, expected: 'scheduler_config.json, <dir>/scheduler_config.json or <dir>/scheduler/scheduler_config.json',
    });
  }
  const text = fs.readFileSync(file, 'utf8').replace(/(:\s*)(-?Infinity|NaN)(\s*[,}\n])/g, (_m, pre: string, tok: string, post: string) => {
    const name = tok === '-Infinity' ? '-inf' : tok === 'Infinity' ? 'inf' : 'nan';
    return `${pre}"${name}"${post}`;
  });
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new InputError('invalid JSON', { code: 'E_JSON', file, cause: err });
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigError('a scheduler config must be a JSON object', { file, expected: 'object', found: show(raw) });
  }
  const obj = raw as Record<string, unknown>;
  return { file, className: typeof obj._class_name === 'string' ? obj._class_name : undefined, raw: obj };
}
