/** @aptp/datasets: data sources, image pipeline, resumable batching and the synthetic world (APTP.md §7). */
export { isSkipped, addNote } from './source';
export type { RgbImage, ImageInput, RawSample, SkipReason, SkippedSample, SourceRow, SourceInfo, IndexedSource, ShardedSource, Source } from './source';
export {
  datasetConfigSchema,
  dataLoaderConfigSchema,
  DATASET_FORMATS,
  parseDatasetConfig,
  parseDataLoaderConfig,
  resolveTransform,
  openSource,
  configErrorFromZod,
} from './config';
export type { DatasetConfig, ResolvedDatasetConfig, DataLoaderConfig } from './config';
export { decodeImage, imageSize, encodePng, inputName, looksTruncated, MAX_IMAGE_PIXELS } from './image/decode';
export type { Interpolation, DecodeOptions } from './image/decode';
export { imageTransformSchema, TRANSFORM_PRESETS, transformPreset, resizedSize, cropAndFlip, toNormalizedChw, prepareImage } from './image/transforms';
export type { ImageTransform, TransformPresetName, CropAndFlip, PreparedImage } from './image/transforms';
export { DataLoader, createDataLoader, batchToTensor } from './iterate/batcher';
export type { DataLoaderOptions, DataLoaderState, Batch } from './iterate/batcher';
export { epochPermutation, workerSlice, bufferShuffle } from './iterate/shuffle';
export { SkipLog, formatSkipReport } from './iterate/skips';
export type { SkipReport } from './iterate/skips';
export { NumpyRandomState } from './iterate/mt19937';
export { openCc3m, cc3mConfigSchema, CC3M_LAYOUT } from './sources/cc3m';
export type { Cc3mConfig } from './sources/cc3m';
export { openCoco2014, coco2014ConfigSchema, readCocoCaptions, cocoFileName } from './sources/coco';
export type { Coco2014Config, CocoAnnotation, CocoCaptions, CocoRowAttributes } from './sources/coco';
export { openCoco30k, coco30kConfigSchema, selectCoco30k, firstCaptionPerImage, writeCoco30kSelection, writeCoco30kReferenceImages, COCO30K_DEFAULTS } from './sources/coco30k';
export type { Coco30kConfig, Coco30kSelectionSummary, Coco30kImagesSummary } from './sources/coco30k';
export { resizeBilinearCv2, encodeNpyRgb, writeNpyRgb } from './image/npy';
export { openWebDataset, webDatasetConfigSchema, expandBraces, resolveShards, splitMemberName } from './sources/webdataset';
export type { WebDatasetConfig } from './sources/webdataset';
export { openImageFolder, imageFolderConfigSchema, parseCsv } from './sources/imageFolder';
export type { ImageFolderConfig } from './sources/imageFolder';
export { SyntheticWorld, openSynthetic, syntheticConfigSchema, sampleScene, splitOfPrompt, promptHash, positionOf, SIZE_RADIUS } from './synthetic/world';
export type { SyntheticConfig, SyntheticSplit, SyntheticPrompt, SyntheticSample } from './synthetic/world';
export {
  SHAPES,
  COUNT_SHAPES,
  COLORS,
  COLOR_NAMES,
  SIZES,
  POSITIONS,
  RELATIONS,
  BACKGROUND_PATTERNS,
  CATEGORIES,
  INVERSE_RELATION,
  captionFor,
} from './synthetic/grammar';
export type {
  ShapeName,
  ColorName,
  SizeName,
  PositionName,
  RelationName,
  BackgroundPattern,
  PromptCategory,
  AttributeName,
  SceneObject,
  SceneBackground,
  SyntheticAttributes,
} from './synthetic/grammar';
export { renderScene, shapeInside, colorRgb, variantRgb, rgbDistance, NOISE_AMPLITUDE } from './synthetic/render';
export { glyphBitmap, hasGlyph, GLYPH_CHARS, FONT_WIDTH, FONT_HEIGHT } from './synthetic/font';
export { renderContactSheet, writeContactSheet, sourceTiles, wrapText, drawText } from './contactSheet';
export type { ContactSheetTile, ContactSheetOptions } from './contactSheet';
export { datasetStats, formatDatasetStats } from './stats';
export { datasetInfoCommand } from './command';
export type { DatasetStats, DatasetStatsOptions } from './stats';
