import * as tf from '@tensorflow/tfjs-core';

/**
 * Runs `step` `warmup + steps` times and asserts that `tf.memory().numTensors` after each of the last `steps`
 * runs equals the count after warm-up (STYLE.md §3 Memory: each loop has such a test).
 */
export async function expectNoTensorLeak(step: () => void | Promise<void>, options: { warmup?: number; steps?: number; name?: string } = {}): Promise<void> {
  const warmup = options.warmup ?? 1;
  const steps = options.steps ?? 3;
  for (let i = 0; i < warmup; i++) await step();
  const base = tf.memory().numTensors;
  for (let i = 0; i < steps; i++) {
    await step();
    const now = tf.memory().numTensors;
    if (now !== base) {
      throw new Error(`${options.name ?? 'step'} leaks tensors: ${base} live after warm-up, ${now} after step ${i + 1}`);
    }
  }
}
