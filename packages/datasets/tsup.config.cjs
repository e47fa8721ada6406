module.exports = require('../../tsup.base.cjs')(['src/index.ts', 'src/main.ts']);
