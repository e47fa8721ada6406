export { trainerProgram } from './program';
// Training infrastructure shared by the stages (optimizer, checkpoints, run folder, loop).
export { AdamW, namedGrads } from './optim/adamW';
export type { ParamGroup, AdamWOptions, AdamWState, AdamWStepInfo } from './optim/adamW';
export { clipGradNorm } from './optim/clipGradNorm';
export { lrSchedule, LR_SCHEDULERS } from './optim/lrSchedule';
export type { LrSchedule, LrSchedulerName, LrScheduleOptions } from './optim/lrSchedule';
export { optimizerConfigSchema, parseOptimizerConfig, scaledLearningRate, createAdamW } from './optim/config';
export type { OptimizerConfig, OptimizerConfigInput, LrScaleOptions } from './optim/config';
export {
  saveCheckpoint,
  loadCheckpoint,
  readCheckpointState,
  findLatestCheckpoint,
  resolveResume,
  listCheckpoints,
  assertFiniteTensors,
  checkpointStateSchema,
  CHECKPOINT_FILES,
  LATEST_POINTER,
} from './checkpoint';
export type { CheckpointContent, CheckpointState, LoadedCheckpoint, FoundCheckpoint, SaveCheckpointOptions, ValidateOptions } from './checkpoint';
export { RunDir, readMetrics, metricsLine, RUN_FILES } from './runDir';
export type { CreateRunDirOptions, OpenRunDirOptions } from './runDir';
export { runTraining, assertFiniteMetrics, formatSummary } from './loop/runTraining';
export type { RunTrainingOptions, StepMetrics, StepContext, TrainingProgress, TrainingSummary } from './loop/runTraining';
export { variableTarget, assignVariables, restoreTraining } from './loop/trainingTarget';
export type { TrainingTarget, HostTrainingState } from './loop/trainingTarget';
export { startRun, jsonDiffPaths } from './loop/startRun';
export type { StartRunOptions, StartedRun } from './loop/startRun';
export { checkpointingConfigSchema } from './loop/config';
export type { CheckpointingConfig, CheckpointingConfigInput } from './loop/config';
