/**
 * PyTorch's CPU random stream for `torch.rand(shape, generator=torch.Generator().manual_seed(seed))`, reproduced in
 * plain JavaScript. The reference draws its **eval-mode** Gumbel noise from a fresh generator seeded 0 for every call
 * (APTP.md §2.4, golden aptp/README.md §6.3); reproducing that stream makes our eval routing identical to the
 * reference's (including its batch-position dependence), instead of "approximately the same".
 *
 * torch (1.13–2.x) CPU generator = MT19937 (32-bit), seeded with `init_genrand(seed)`; a float32 uniform is
 * `(next32() & 0xffffff) * 2^-24` (24 mantissa bits), drawn serially in row-major order.
 */
export class TorchMt19937 {
  private readonly mt = new Uint32Array(624);
  private index = 624;

  constructor(seed = 0) {
    const mt = this.mt;
    mt[0] = seed >>> 0;
    for (let i = 1; i < 624; i++) {
      const prev = mt[i - 1]! ^ (mt[i - 1]! >>> 30);
      // 1812433253 * prev + i (mod 2^32), split to stay exact in doubles
      mt[i] = (((((prev & 0xffff0000) >>> 16) * 1812433253) << 16) + (prev & 0x0000ffff) * 1812433253 + i) >>> 0;
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

  nextUint32(): number {
    if (this.index >= 624) this.twist();
    let y = this.mt[this.index++]!;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** One float32 uniform in [0, 1) exactly as `torch.rand` on CPU. */
  nextFloat(): number {
    return (this.nextUint32() & 0xffffff) / 16777216;
  }
}

/** The first `n` values of `torch.rand(n, generator=torch.Generator().manual_seed(seed))`. */
export function torchUniformStream(n: number, seed = 0): Float32Array {
  const g = new TorchMt19937(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = g.nextFloat();
  return out;
}
