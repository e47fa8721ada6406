import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
import { silenceCpuNagging } from '../backend/init';

/** The backends numeric tests run on (STYLE.md: cpu is the correctness oracle, wasm the training engine). */
export const TEST_BACKENDS = ['cpu', 'wasm'] as const;
export type TestBackend = (typeof TEST_BACKENDS)[number];

export async function useBackend(name: TestBackend): Promise<void> {
  const ok = await tf.setBackend(name);
  if (!ok) throw new Error(`backend ${name} failed to initialise`);
  await tf.ready();
  silenceCpuNagging();
}

/**
 * `describe.each` over cpu and wasm, switching the backend in `beforeAll`.
 * Usage: `describeBackends('unet forward', (backend) => { it(...) })`.
 */
export function describeBackends(name: string, fn: (backend: TestBackend) => void, backends: readonly TestBackend[] = TEST_BACKENDS): void {
  for (const backend of backends) {
    describe(`${name} [${backend}]`, () => {
      beforeAll(async () => {
        await useBackend(backend);
      });
      fn(backend);
    });
  }
}
