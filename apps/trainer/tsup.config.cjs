// gradientWorker: the worker-thread entry of data-parallel teacher steps (src/parallel/pool.ts finds it next to the
// bundle via __dirname, which `shims` defines in the ESM build as well).
module.exports = require('../../tsup.base.cjs')({ index: 'src/index.ts', main: 'src/main.ts', gradientWorker: 'src/parallel/gradientWorker.ts' }, { shims: true });
