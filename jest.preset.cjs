// Shared Jest settings: @swc/jest transform (type checking is the `typecheck` target), tests beside sources,
// workspace packages resolved to their TypeScript sources.
const path = require('node:path');

const root = __dirname;
const packages = ['core', 'unet-gating', 'router', 'ot', 'losses', 'datasets', 'eval'];

/** @param {string} projectDir @param {string} displayName */
module.exports = function jestConfig(projectDir, displayName) {
  return {
    displayName,
    rootDir: projectDir,
    testEnvironment: require.resolve('./jest.env.cjs'),
    setupFiles: [require.resolve('./jest.setup.cjs')],
    testMatch: ['<rootDir>/src/**/*.test.ts', '<rootDir>/*.test.ts', '<rootDir>/bench/**/*.test.ts'],
    transform: {
      '^.+\\.(t|j)s$': [require.resolve('@swc/jest'), {
        jsc: { parser: { syntax: 'typescript' }, target: 'es2022' },
        module: { type: 'commonjs' },
        sourceMaps: 'inline',
      }],
    },
    moduleNameMapper: {
      '^@aptp/core/testing$': path.join(root, 'packages/core/src/testing/index.ts'),
      ...Object.fromEntries(packages.map((p) => [`^@aptp/${p}$`, path.join(root, `packages/${p}/src/index.ts`)])),
    },
    testTimeout: 300000,
  };
};
