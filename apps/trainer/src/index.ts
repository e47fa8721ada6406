export { trainerProgram } from './program';
// Training infrastructure shared by the stages (optimizer, checkpoints, run folder, loop).
export { AdamW, namedGrads } from './optim/adamW';
export type { ParamGroup, AdamWOptions, AdamWState, AdamWStepInfo } from './optim/adamW';
export { clipGradNorm } from './optim/clipGradNorm';
export { lrSchedule, parseStepRules, LR_SCHEDULERS } from './optim/lrSchedule';
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
// Teacher stage (issue 7 item 1).
export { teacherCommand } from './commands/teacher';
export { runTeacher, teacherSchema, teacherLoaderSchema, teacherModel, teacherRunConfig, teacherLoader, teacherImageSize, isSyntheticWorldConfig, writeTeacherFolder, samplingSchedulerJson, DEFAULT_TEACHER_UNET, TEACHER_FILES } from './stages/teacher';
export type { TeacherArgs, TeacherModel, TeacherRunOptions, TeacherRunResult, WriteTeacherOptions } from './stages/teacher';
export { teacherBatch, teacherBatchOf, dataRowKey, teacherLoss, teacherStep, teacherStepOn, applyTeacherUpdate, updateEma } from './steps/teacherStep';
export type { TeacherBatch, TeacherBatchOptions, TeacherImages, TeacherStepContext } from './steps/teacherStep';
export { dataParallelTeacherStepOn, dataParallelLayout, replicaInit } from './parallel/dataParallelStep';
export type { DataParallel } from './parallel/dataParallelStep';
export { GradientWorkerPool, defaultWorkerScript } from './parallel/pool';
export { TeacherGradientReplica, shardGradients } from './parallel/replica';
export type { ReplicaInit } from './parallel/replica';
export { shardRanges, teacherShards, combineShardGradients, flattenTensors, parameterKeys } from './parallel/shards';
export type { TeacherShard, ShardGradients } from './parallel/shards';
export { openTrainingData } from './loop/trainingData';
export type { TrainingData, TrainingLoaderConfig, OpenTrainingDataOptions } from './loop/trainingData';
export { createTrainableUNet, initUNetWeights } from './steps/trainableUNet';
export type { TrainableUNet } from './steps/trainableUNet';
// APTP stages: prune (router + codes), route, fine-tune experts (issue 7 items 2–4).
export { pruneConfigSchema, finetuneConfigSchema, promptEncoderSchema, parsePruneConfig, parseFinetuneConfig, parseStageConfig, referenceDefaults, BASELINES, DEFAULT_TEACHER_DIR } from './config/reference';
export type { PruneConfig, PruneConfigInput, FinetuneConfig, FinetuneConfigInput, PromptEncoderConfig, Baseline } from './config/reference';
export { pruneStep, pruneStepGradients, disposePruneStepOutput, routerParams, blockKeys, diffusionWeights } from './steps/pruneStep';
export type { PruneStepModel, PruneBatch, PruneStepOutput, PruneStepMetrics } from './steps/pruneStep';
export { finetuneStep, finetuneStepGradients } from './steps/finetuneStep';
export type { FinetuneStepModel, FinetuneBatch, FinetuneLossWeights } from './steps/finetuneStep';
export { runPrune, loadTeacher, createPromptEncoder, baselineRouterConfig, randomArchitecture, expertSummaries, readExperts, teacherX0, latentSize, PRUNE_FILES } from './stages/prune';
export type { Teacher, PruneStageOptions, PruneStageResult, ExpertSummary } from './stages/prune';
export { runRoute, readRouting, readPruneRunConfig, datasetForSplit } from './stages/route';
export type { RouteOptions, RoutingMapping } from './stages/route';
export { runFinetune, subsetSource, FINETUNE_FILES } from './stages/finetune';
export type { FinetuneStageOptions, FinetuneStageResult } from './stages/finetune';
export { pruneCommand, pruneConfigFromArgs } from './commands/prune';
export { routeCommand } from './commands/route';
export { finetuneCommand, finetuneConfigFromArgs } from './commands/finetune';
// The sampler's model folder from prune + finetune runs, and the embedded default (issue 11).
export { assembleCommand } from './commands/assemble';
export { assembleModel, MODEL_FILES } from './stages/assembleModel';
export type { AssembleModelOptions, AssembledModel, AssembledExpert } from './stages/assembleModel';
export { demoCommand } from './commands/demo';
export { runDemo, formatResults, demoStageConfigs, writeEvalInputs, findRepoRoot, progressFraction, DEMO_BUDGETS, DEMO_FILES } from './stages/demo';
export type { DemoBudget, DemoOptions, DemoResult, StageTiming, ResultsContext } from './stages/demo';
