/** @aptp/core: shared low-level runtime for the APTP packages. */
export { AptpError, ConfigError, InputError, ShapeError, NumericError, BackendError, asAptpError } from './errors';
export type { AptpErrorDetails, BackendAttempt } from './errors';
export { initBackend, describeBackend, resolveBackendName, BACKEND_ORDER } from './backend/init';
export type { BackendName, BackendChoice, InitBackendOptions } from './backend/init';
export { writeFileAtomic, writeJsonAtomic } from './io/atomic';
export {
  SafetensorsReader,
  readSafetensors,
  loadSafetensors,
  writeSafetensors,
  encodeSafetensors,
  toTfTensor,
  f16ToF32,
  f32ToF16,
} from './io/safetensors';
export type { HostTensor, TensorInfo, SafetensorsDtype, WritableTensor, WriteSafetensorsOptions } from './io/safetensors';
export { Rng } from './rng/rng';
export type { RngState } from './rng/rng';
export { runProgram, parseCommandArgs, commandHelp, programHelp } from './cli/command';
export type { Command, CommandContext, Program } from './cli/command';
export { ProgressBar } from './cli/progress';
export type { Progress, ProgressCallback } from './cli/progress';
export { EXIT, exitCodeFor } from './cli/exitCodes';
