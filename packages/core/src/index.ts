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
export { Mt19937 } from './rng/mt19937';
export type { RngState } from './rng/rng';
export { runProgram, parseCommandArgs, commandHelp, programHelp } from './cli/command';
export type { AnyCommand, Command, CommandContext, Program } from './cli/command';
export { ProgressBar } from './cli/progress';
export type { Progress, ProgressBarOptions, ProgressCallback } from './cli/progress';
export { EXIT, exitCodeFor } from './cli/exitCodes';
export { OrtModel, loadOrtModel, int64, defaultOrtThreads } from './ort/runtime';
export type { OrtData, OrtDataType, OrtTensorData, OrtModelOptions } from './ort/runtime';
export { OnnxGraph, onnxTensor } from './ops/onnx/graph';
export type { OnnxDtype, OnnxDim, OnnxAttr, OnnxTensorInit, OnnxNodeOptions, OnnxGraphOptions } from './ops/onnx/graph';
export type { Ops } from './ops/ops';
export { EagerOps } from './ops/eager/eagerOps';
export type { EagerOpsOptions } from './ops/eager/eagerOps';
export { conv2dNhwc, conv2dInputGrad, conv2dFilterGrad } from './ops/eager/conv2d';
export { matMul2d, linearLastAxis } from './ops/eager/matmul';
export { multiHeadAttention, DENSE_ATTENTION_LIMIT, type AttentionPath } from './ops/eager/attention';
export { ClipTokenizer, clipCleanText, bytesToUnicode, CLIP_CONTEXT_LENGTH } from './tokenizers/clipTokenizer';
export type { ClipEncoding, ClipTokenizerData } from './tokenizers/clipTokenizer';
export { loadClipTokenizer, parseMerges, vocabFromMerges } from './tokenizers/load';
export { DDIMScheduler } from './schedulers/ddim';
export { PNDMScheduler } from './schedulers/pndm';
export { DPMSolverMultistepScheduler } from './schedulers/dpmSolver';
export { DDPMScheduler } from './schedulers/ddpm';
export type { TimestepsLike } from './schedulers/ddpm';
export { loadScheduler, createScheduler, loadNoiseSchedule, SAMPLER_CLASS_NAMES } from './schedulers/loadScheduler';
export type { SamplerClassName } from './schedulers/loadScheduler';
export type { Scheduler, SchedulerOutput, SchedulerState, SchedulerStepOptions, SerializedTensor } from './schedulers/scheduler';
export {
  SCHEDULER_CLASS_NAMES,
  SCHEDULER_DEFAULTS,
  schedulerConfigFromJson,
  resolveSchedulerConfig,
  schedulerConfigToJson,
  readSchedulerConfigFile,
} from './schedulers/schedulerConfig';
export type { SchedulerConfig, SchedulerClassName, PredictionType, TimestepSpacing, SchedulerConfigFile } from './schedulers/schedulerConfig';
export { trainSchedule, betasForConfig, alphasCumprodFromBetas, rescaleZeroTerminalSnr, BETA_SCHEDULES } from './schedulers/betas';
export type { BetaSchedule, BetaScheduleConfig, TrainSchedule } from './schedulers/betas';
export { WordPieceTokenizer, wordPieceFromTokenizerJson, loadWordPieceTokenizer, bertNormalize, preTokenize } from './tokenizers/wordPiece';
export type { WordPieceTokenizerData, WordPieceNormalizer, WordPiecePreTokenizer, WordPieceBatch, WordPieceLoadOptions } from './tokenizers/wordPiece';
export { registerEagerGradients } from './ops/eager/gradients';
export { OnnxOps } from './ops/onnx/onnxOps';
export type { OnnxValue, OnnxHostWeight, OnnxOpsOptions } from './ops/onnx/onnxOps';
export { envCommand } from './cli/envCommand';
