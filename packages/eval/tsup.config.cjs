module.exports = require('../../tsup.base.cjs')(['src/index.ts']);
