/** Test utilities: `@aptp/core/testing` (the only subpath export). */
export { goldenDir, goldenPath, describeGolden, goldenArray, isGoldenArray, readGoldenJson, readGoldenTensors } from './golden';
export type { GoldenArray } from './golden';
export { expectClose, compareClose } from './expectClose';
export type { CloseOptions, CloseReport } from './expectClose';
export { expectNoTensorLeak } from './leaks';
export { useTempDirs } from './tempDirs';
export { gradCheck } from './gradCheck';
export type { GradCheckOptions } from './gradCheck';
export { TEST_BACKENDS, useBackend, describeBackends } from './backends';
export type { TestBackend } from './backends';
