export { samplerProgram } from './program';
export { loadAptpModel, AptpModel, AptpImageEngine, loadAptpImageEngine, loadPromptEncoder, planBatches, encodePng, FULL, MODEL_FOLDER_PARTS } from './generate';
export type { ExpertEntry, ExpertId, LoadAptpModelOptions, RouteNoise, SampleItem, AptpImageEngineOptions } from './generate';
export { sampleCommand, readPromptsFile } from './commands/sample';
export type { SampleArgs, PromptRow } from './commands/sample';
export { evalCommand, evaluateVariants, readEvalPrompts } from './commands/eval';
export type { EvalArgs, EvalVariant, EvalPromptRow } from './commands/eval';
