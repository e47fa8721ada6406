/**
 * The 32-bit Mersenne Twister (MT19937) with `init_genrand` seeding: the generator behind numpy's legacy
 * `RandomState` and PyTorch's CPU `torch.Generator`. Reference-compatibility code uses it to reproduce the reference's
 * exact random streams (numpy's COCO-30k selection, torch's eval-mode Gumbel noise); our own randomness uses `Rng`.
 */
export class Mt19937 {
  private readonly mt = new Uint32Array(624);
  private index = 624;

  /** `init_genrand(seed)`; `seed` is taken modulo 2^32. */
  constructor(seed: number) {
    const mt = this.mt;
    mt[0] = seed >>> 0;
    for (let i = 1; i < 624; i++) {
      const prev = mt[i - 1]! ^ (mt[i - 1]! >>> 30);
      mt[i] = (Math.imul(1812433253, prev) + i) >>> 0; // 1812433253·prev + i (mod 2^32)
    }
  }

  private twist(): void {
    const mt = this.mt;
    for (let i = 0; i < 624; i++) {
      const y = (mt[i]! & 0x80000000) | (mt[(i + 1) % 624]! & 0x7fffffff);
      let v = mt[(i + 397) % 624]! ^ (y >>> 1);
      if (y & 1) v ^= 0x9908b0df;
      mt[i] = v >>> 0;
    }
    this.index = 0;
  }

  /** `genrand_int32()`: the next tempered 32-bit output. */
  nextUint32(): number {
    if (this.index >= 624) this.twist();
    let y = this.mt[this.index++]!;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }
}
