import * as tf from '@tensorflow/tfjs-core';
import { initBackend, describeBackend, resolveBackendName } from './init';
import { BackendError, ConfigError } from '../errors';

describe('initBackend', () => {
  const saved = process.env.APTP_BACKEND;
  afterEach(() => {
    if (saved === undefined) delete process.env.APTP_BACKEND;
    else process.env.APTP_BACKEND = saved;
  });

  it('skips the absent native backends and picks wasm, reporting each failure', async () => {
    delete process.env.APTP_BACKEND;
    const choice = await initBackend();
    expect(choice.name).toBe('wasm');
    expect(tf.getBackend()).toBe('wasm');
    expect(choice.tried.map((t) => t.name)).toEqual(['tensorflow-gpu', 'tensorflow', 'wasm']);
    expect(choice.tried[0]!.ok).toBe(false);
    expect(choice.tried[0]!.error).toMatch(/tfjs-node-gpu/);
    expect(describeBackend(choice)).toMatch(/^backend wasm \(skipped tensorflow-gpu: /);
  });

  it('honours APTP_BACKEND and the --backend option', async () => {
    process.env.APTP_BACKEND = 'cpu';
    expect((await initBackend()).name).toBe('cpu');
    expect(tf.getBackend()).toBe('cpu');
    expect((await initBackend({ backend: 'wasm' })).name).toBe('wasm');
  });

  it('fails clearly when a forced backend is not installed, and on unknown names', async () => {
    await expect(initBackend({ backend: 'tfjs-node' })).rejects.toThrow(BackendError);
    await expect(initBackend({ backend: 'tfjs-node' })).rejects.toThrow(/tensorflow: .*tfjs-node/);
    expect(() => resolveBackendName('cuda')).toThrow(ConfigError);
  });
});
