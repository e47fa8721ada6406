// Jest runs tests in a separate realm whose typed-array constructors differ from Node's, which breaks
// onnxruntime-node's `instanceof Float32Array` checks (ORT issue #16622, STACK.md §3). Share the host's.
const { TestEnvironment } = require('jest-environment-node');

module.exports = class AptpTestEnvironment extends TestEnvironment {
  constructor(config, context) {
    super(config, context);
    for (const k of ['ArrayBuffer', 'SharedArrayBuffer', 'Float32Array', 'Float64Array', 'Int8Array', 'Uint8Array',
      'Uint8ClampedArray', 'Int16Array', 'Uint16Array', 'Int32Array', 'Uint32Array', 'BigInt64Array', 'BigUint64Array']) {
      this.global[k] = globalThis[k];
    }
  }
};
