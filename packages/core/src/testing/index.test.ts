import * as api from './index';

// The public API (STYLE.md §3 Packages: a test guards the export list). Change it on purpose, then update this list.
it('exports exactly the documented API', () => {
  expect(Object.keys(api).sort()).toEqual([
    'TEST_BACKENDS',
    'compareClose',
    'describeBackends',
    'describeGolden',
    'expectClose',
    'expectNoTensorLeak',
    'goldenArray',
    'goldenDir',
    'goldenPath',
    'gradCheck',
    'isGoldenArray',
    'readGoldenJson',
    'readGoldenTensors',
    'useBackend',
    'useTempDirs',
  ]);
});
