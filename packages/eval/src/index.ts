/** @aptp/eval: FID, CMMD, CLIP score, feature extractors and efficiency numbers (APTP.md §8). */
export { gaussianStats, frechetDistance, traceSqrtProduct } from './metrics/frechet';
export type { FeatureMatrix, GaussianStats, FrechetResult, LinalgOptions, GaussianStatsOptions } from './metrics/frechet';
export { symmetricEigenvalues, choleskySemidefinite } from './metrics/symEig';
export type { CholeskyResult } from './metrics/symEig';
export { Float64Linalg } from './metrics/matmul64';
export { cmmd, l2NormalizeRows } from './metrics/cmmd';
export type { CmmdOptions, CmmdResult } from './metrics/cmmd';
export { clipScore, cosineSimilarity } from './metrics/clipScore';
export { fisherExactTest, permutationTest } from './metrics/significance';
export type { ClipScoreResult } from './metrics/clipScore';
export { torchBilinearResize, pilResize, cropImage, pythonRound } from './features/resize';
export type { RgbImage, FloatRgbImage, PilFilter } from './features/resize';
export { loadRgbImage, parseNpyImage, encodeNpyImage } from './features/images';
export { InceptionFeatures, inceptionPreprocess } from './features/inception';
export type { InceptionOptions, InceptionInputRange } from './features/inception';
export {
  ClipImageFeatures,
  ClipTextFeatures,
  clipImagePreprocess,
  clipResizeCrop,
  CLIP_SCORE_PREPROCESS,
  CMMD_PREPROCESS,
  CLIP_MEAN,
  CLIP_STD,
} from './features/clip';
export type { ClipImagePreprocess, ClipImageOptions, ClipTextOptions, ClipTextResult } from './features/clip';
export { referenceStats, statsCacheKey, writeStats, readStats } from './features/statsCache';
export type { CacheableExtractor, ReferenceStatsOptions, CachedStats } from './features/statsCache';
export { macsPerPrompt, countParams, paramsPerExpert, latencyStats, quantileSorted } from './efficiency';
export type { MacsPerPrompt, LatencyStats } from './efficiency';
export {
  SyntheticAttributeClassifier,
  syntheticHeadClasses,
  attributeTargets,
  encodeTargets,
  classifierLoss,
  classifierConfigSchema,
  classifierWeightShapes,
  imagesToTensor,
  syntheticFeatureDistances,
  HEAD_NAMES,
  CLASSIFIER_ARCHITECTURE,
  CLASSIFIER_CONFIG_FILE,
  CLASSIFIER_WEIGHTS_FILE,
} from './synthetic/classifier';
export type {
  HeadName,
  HeadTargets,
  ClassifierConfig,
  ClassifierConfigInput,
  ClassifierInput,
  ClassifierForward,
  ClassifierOutput,
  AttributePrediction,
  SyntheticDistances,
} from './synthetic/classifier';
export { promptAdherence, promptChecks, headAccuracy, validateClassifier, derangement } from './synthetic/adherence';
export type { AdherenceAttribute, AdherenceResult, Ratio, ClassifierValidation } from './synthetic/adherence';
export { buildReport, reportInputSchema, codeUsageStats, formatNumber, formatMacs, formatRatio, VARIANT_KINDS } from './report/report';
export type {
  ReportInput,
  Report,
  ReportRatio,
  ReportExpert,
  ReportPrompt,
  ReportCategory,
  ReportVariant,
  ReportClaim,
  ClaimStatus,
  CodeUsageStats,
  VariantKind,
} from './report/report';
export { renderReportHtml, writeReport, jsonPointer, REPORT_JSON_FILE, REPORT_HTML_FILE } from './report/html';
export type { RenderReportOptions, WriteReportOptions, WriteReportResult } from './report/html';
export { escapeHtml } from './report/charts';
