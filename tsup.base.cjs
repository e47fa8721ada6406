// Shared tsup settings: ESM + CJS + .d.ts for every package; workspace and npm dependencies stay external.
/** @param {string[]} entry @param {Record<string, unknown>} [extra] */
module.exports = function tsupConfig(entry, extra = {}) {
  return {
    entry,
    format: ['esm', 'cjs'],
    dts: { compilerOptions: { paths: {}, baseUrl: '.' } },
    outDir: 'dist',
    clean: true,
    sourcemap: true,
    target: 'node20',
    platform: 'node',
    splitting: false,
    outExtension: ({ format }) => ({ js: format === 'esm' ? '.mjs' : '.js' }),
    tsconfig: 'tsconfig.json',
    ...extra,
  };
};
