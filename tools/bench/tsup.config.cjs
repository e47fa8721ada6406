// Builds the benchmarks into dist/bench/*.js (CommonJS, run with plain `node`; Node 20 has no TypeScript loader and
// the workspace has no tsx/ts-node). Workspace packages are bundled from their sources through the tsconfig paths
// (`@aptp/core` → packages/core/src/index.ts), so no `^build` is needed; npm packages stay external and resolve from
// node_modules at run time (one copy of @tensorflow/tfjs-core, and the wasm backend finds its .wasm files).
const path = require('node:path');

module.exports = {
  entry: { run: 'bench/run.ts', 'unet.bench': 'bench/unet.bench.ts', 'routing.bench': 'bench/routing.bench.ts', 'attention.bench': 'bench/attention.bench.ts', 'teacher.bench': 'bench/teacher.bench.ts' },
  outDir: 'dist/bench',
  format: ['cjs'],
  outExtension: () => ({ js: '.js' }),
  target: 'node20',
  platform: 'node',
  tsconfig: path.join(__dirname, '..', 'tsconfig.json'),
  skipNodeModulesBundle: true,
  noExternal: [/^@aptp\//],
  splitting: false,
  sourcemap: true,
  clean: true,
  dts: false,
};
