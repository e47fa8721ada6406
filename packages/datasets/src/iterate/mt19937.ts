import { ConfigError, Mt19937 } from '@aptp/core';

/**
 * numpy's legacy `RandomState` (MT19937), only as far as the reference needs it: `numpy.random.seed(s)` followed by
 * `choice(n, k, replace=False)` = `permutation(n)[:k]` selects the COCO-30k evaluation subset (APTP.md §7.2). Same
 * draws as numpy: `init_genrand` seeding, `random_interval` (mask + rejection) in a backwards Fisher–Yates.
 */
export class NumpyRandomState {
  private readonly mt: Mt19937;

  constructor(seed: number) {
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new ConfigError('seed must be an integer in [0, 2^32 - 1]', { field: 'seed', found: seed });
    this.mt = new Mt19937(seed);
  }

  nextUint32(): number {
    return this.mt.nextUint32();
  }

  /** `random_sample()`: 53-bit double in [0, 1). */
  randomSample(): number {
    const a = this.nextUint32() >>> 5;
    const b = this.nextUint32() >>> 6;
    return (a * 67108864 + b) / 9007199254740992;
  }

  /** numpy `random_interval(max)`: uniform integer in [0, max] by masking and rejection (max < 2^32). */
  randomInterval(max: number): number {
    if (max === 0) return 0;
    let mask = max;
    mask |= mask >>> 1;
    mask |= mask >>> 2;
    mask |= mask >>> 4;
    mask |= mask >>> 8;
    mask |= mask >>> 16;
    mask >>>= 0;
    let v: number;
    do v = (this.nextUint32() & mask) >>> 0;
    while (v > max);
    return v;
  }

  /** `permutation(n)`: shuffled `arange(n)`. */
  permutation(n: number): Uint32Array {
    const p = new Uint32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    for (let i = n - 1; i > 0; i--) {
      const j = this.randomInterval(i);
      const t = p[i]!;
      p[i] = p[j]!;
      p[j] = t;
    }
    return p;
  }

  /** `choice(n, k, replace=False)` without probabilities. */
  choiceWithoutReplacement(n: number, k: number): Uint32Array {
    if (k > n) throw new ConfigError('cannot take a larger sample than the population without replacement', { field: 'count', expected: `<= ${n}`, found: k });
    return this.permutation(n).slice(0, k);
  }
}
