import { Mt19937 } from '@aptp/core';

/**
 * PyTorch's CPU random stream for `torch.rand(shape, generator=torch.Generator().manual_seed(seed))`, reproduced in
 * plain JavaScript. The reference draws its **eval-mode** Gumbel noise from a fresh generator seeded 0 for every call
 * (APTP.md §2.4, golden aptp/README.md §6.3); reproducing that stream makes our eval routing identical to the
 * reference's (including its batch-position dependence), instead of "approximately the same".
 *
 * torch (1.13–2.x) CPU generator = MT19937 (32-bit), seeded with `init_genrand(seed)`; a float32 uniform is
 * `(next32() & 0xffffff) * 2^-24` (24 mantissa bits), drawn serially in row-major order.
 */

/** The first `n` values of `torch.rand(n, generator=torch.Generator().manual_seed(seed))`. */
export function torchUniformStream(n: number, seed = 0): Float32Array {
  const g = new Mt19937(seed);
  const out = new Float32Array(n);
  // a float32 uniform is (next32() & 0xffffff)·2^-24 (24 mantissa bits)
  for (let i = 0; i < n; i++) out[i] = (g.nextUint32() & 0xffffff) / 16777216;
  return out;
}
