module.exports = { ...require('../jest.preset.cjs')(__dirname, 'tools'), testMatch: ['<rootDir>/*.test.ts', '<rootDir>/bench/**/*.test.ts'] };
