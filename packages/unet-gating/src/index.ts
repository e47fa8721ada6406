/** @aptp/unet-gating: the diffusers UNet2DConditionModel with APTP gates, MACs model and expert pruning. */
export { parseUNetConfig, readUNetConfig, unetStructure, downBlockHeads, midBlockHeads, upBlockHeads } from './config';
export type {
  UNetConfig,
  DownBlockType,
  UpBlockType,
  MidBlockType,
  BlockGating,
  BlockSpec,
  ResnetSpec,
  TransformerSpec,
  UNetStructure,
  DiffusersUNetConfigJson,
} from './config';
// Gate layout and architecture vectors (APTP.md §3).
export { architectureLayout, aptpLayout, withAptpGating, findSubBlock, subBlockGates, subBlockGate } from './gates/layout';
export type { ArchitectureLayout, SubBlock, SubBlockKind, WidthGate, DepthGate, GateKind } from './gates/layout';
export {
  HARD_THRESHOLD,
  checkArchVector,
  splitArchVector,
  disposeGates,
  hardGates,
  hardStraightThrough,
  expandGate,
  onesArchVector,
  hardArchitecture,
  keptFraction,
} from './gates/vector';
export type { SubBlockGates, HardArchitecture } from './gates/vector';
// MACs model (APTP.md §4).
export {
  macsModel,
  prunableTarget,
  prunableMacsShares,
  currentMacsOf,
  currentPrunableMacs,
  currentTotalMacs,
  resourceRatios,
} from './macs';
export type { MacsInput, MacsModel, SubBlockMacs, CurrentMacs } from './macs';
// Physical pruning into experts (APTP.md §6.2).
export {
  prunedArchitecture,
  tensorRule,
  subBlockIndex,
  prunedShape,
  sliceAxis,
  pruneTensor,
  pruneWeights,
  moduleCounts,
  prunedConfigJson,
  pruneUNetFolder,
  writePrunedUNet,
  readPrunedUNet,
} from './prune';
export type {
  PrunedArchitecture,
  PrunedSubBlock,
  PrunedResnet,
  PrunedTransformer,
  TensorRule,
  PrunedModuleCounts,
  PrunedConfigEntry,
  PruneFolderOptions,
  PruneResult,
  PrunedUNetFolder,
} from './prune';
// The diffusers UNet (config, weights, blocks, forward) and where gates multiply.
export { UNet2DConditionModel, loadUNet, createEagerUNet, UNET_FILES } from './unet';
export type { UNetForwardInput, UNetForwardOutput, UNetLoadOptions, LoadUNetOptions, BlockOutputs } from './unet';
export { ParamScope, ParamStore, safetensorsSource, hostSource, eagerTensorFactory, randomUNetWeights } from './weights';
export type { WeightSource, TensorFactory, ShapeSpec, LoadedParam } from './weights';
export { gateChannelGroups, gateHeads, gateFfUnits, applyDepth } from './gates/apply';
export type { GatePlacement, BlockGates } from './gates/apply';
export type { CaptureFn, CaptureKind, ForwardContext, LoadContext } from './blocks/context';
// Experts: pruned folders and shared-weight experts (APTP.md §6, §9).
export { prunedWeightSource, expertConfig, SharedExperts, openSharedExperts, loadExpert } from './experts';
export type { SharedExpertsOptions } from './experts';
// ONNX export and the sampler engines (issue 10).
export { exportUNetToOnnx, exportUNetFolder, exportUNetDir, unetWeightBytes, readOnnxUNetInfo, ONNX_FILES } from './export/onnx';
export type { OnnxExportOptions, ExportFolderOptions, ExportedUNet, OnnxUNetInfo, ExportDim } from './export/onnx';
export { OrtUNetEngine } from './engines/ort';
export type { OrtUNetEngineOptions } from './engines/ort';
export { TfjsUNetEngine } from './engines/tfjs';
export { combineGuidance } from './engines/engine';
export type { UNetEngine, UNetStepInput, GuidedStepInput, HostArray } from './engines/engine';
// Text conditioning: the TextConditioner interface and the weight-free synthetic-world encoder.
export { HashedTextConditioner, hashedTextConditionerSchema, parseConditioningConfig, promptTokens, CONDITIONING_FILES } from './pipeline/conditioning';
export type { TextConditioner, HashedTextConditionerConfig, HashedTextConditionerConfigInput } from './pipeline/conditioning';
// Text-to-image pipeline: CFG sampling loop, CLIP text encoder and VAE decoder in ONNX (APTP.md §9, §11).
export {
  TextToImagePipeline,
  loadTextToImage,
  loadUNetEngine,
  loadImageDecoder,
  loadTextConditioner,
  checkConditioner,
  readModelUNetConfig,
  onnxExportDir,
  planGroups,
  combineGuidancePerItem,
  initialNoise,
  TEXT_TO_IMAGE_FILES,
} from './pipeline/textToImage';
export type { TextToImageRequest, TextToImageParts, TextToImageOptions, GeneratedImageRgb, UNetEngineKind, LoadUNetEngineOptions, LoadTextToImageOptions } from './pipeline/textToImage';
export { OrtVaeDecoder, PixelDecoder, toRgb8, VAE_DECODER_FILES, OrtVaeEncoder, PixelEncoder, VAE_ENCODER_FILES } from './pipeline/vae';
export type { ImageDecoder, VaeConfig, VaeDecoderConfig, VaeDecoderOptions, ImageEncoder, ImageEncodeOptions, LatentPosterior, VaeEncoderOptions } from './pipeline/vae';
export { ClipTextConditioner, CLIP_TEXT_FILES } from './pipeline/clipText';
export type { ClipTextConditionerOptions } from './pipeline/clipText';
