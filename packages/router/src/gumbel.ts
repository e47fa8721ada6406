import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, Rng, ShapeError, registerEagerGradients } from '@aptp/core';
import type { ArchitectureLayout } from '@aptp/unet-gating';
import { layoutConstants } from './gateGroups';
import { torchUniformStream } from './torchNoise';

// tfjs-core registers no gradients by itself; core registers the ones differentiable code uses (Cumsum, Softmax,
// Log1p, Sigmoid, MatMul, Slice, Concat, …). Idempotent.
registerEagerGradients();

/**
 * Gumbel-sigmoid relaxation of architecture logits (APTP.md §2.4, golden aptp/README.md §6.3–6.4; reference
 * `StructureVectorQuantizer.gumbel_sigmoid_trick` + `pdm/utils/estimation_utils.py`).
 *
 * Width entries: `s = σ((ℓ + g + base) / T)`, then the non-zero rule (per row and width gate: if no element has
 * `s ≥ 0.5`, add 0.5 to the gate's first element). Depth entries ("importance" sampling): `p = softmax(ℓ_depth)`,
 * `x = reverse(cumsum(p))`, `λ = log(x + 1e−6) − log1p(−(x − 1e−6))`, `t_j = σ((λ_j + g_j + base) / T)`, and depth
 * gate `depthOrder[j] mod D` receives `t_j`.
 *
 * Noise convention (golden §6.3): one `[R, L]` Gumbel tensor per call; columns `0 … W−1` are the noise of width entry
 * k, columns `W … W+D−1` the depth noise **in draw order j** (added before the scatter). Noise is always injected by
 * the caller: {@link evalGumbelNoise} (the reference's fixed eval stream), {@link sampleGumbelNoise} (seeded, per
 * row), {@link gumbelFromUniform} (from stored uniforms), or zeros.
 */
export interface GumbelSigmoidOptions {
  /** Temperature T (reference `quantizer_T`, 0.4). */
  temperature: number;
  /** Additive logit offset (reference `quantizer_base`, 3). */
  base: number;
  /** Apply the non-zero rule to every width gate (reference `non_zero_width`, true). */
  nonZeroWidth: boolean;
  /** Priority order of the depth gates (reference `depth_order`; negative entries count from the end). */
  depthOrder: readonly number[];
}

export interface GumbelSigmoidResult {
  /** `[R, L]` soft gates. */
  gates: tf.Tensor2D;
  /** `[R, D]` `t_j` before the scatter to `depthOrder` (draw order). */
  depthBeforeScatter: tf.Tensor2D;
  /** `[R, G]` 1 where the non-zero rule fired for that row and width gate, else 0 (no gradient). */
  nonZeroRuleApplied: tf.Tensor2D;
}

/** `depth_order mod D` as the reference computes it (`[13, 12, 0, 1, …]` for SD 2.1); validates a permutation. */
export function depthOrderMod(depthOrder: readonly number[], depthEntries: number): number[] {
  if (depthOrder.length !== depthEntries) {
    throw new ConfigError('depth_order must list every depth gate once', { field: 'depthOrder', expected: `${depthEntries} entries`, found: depthOrder.length });
  }
  const mod = depthOrder.map((i) => ((i % depthEntries) + depthEntries) % depthEntries);
  if (new Set(mod).size !== depthEntries) {
    throw new ConfigError('depth_order (mod D) is not a permutation', { field: 'depthOrder', expected: `a permutation of 0..${depthEntries - 1}`, found: depthOrder });
  }
  return mod;
}

function check2d(x: tf.Tensor, name: string, cols: number): void {
  if (x.rank !== 2 || x.shape[1] !== cols) {
    throw new ShapeError('wrong shape', { field: name, expected: `[R, ${cols}]`, found: x.shape });
  }
}

/**
 * Runs `f` on `inputs` outside the gradient tape (PyTorch's `torch.no_grad()` / `.detach()`): its outputs are
 * constants for autodiff (zero gradient to `inputs`), and the ops inside are never differentiated, so they may use
 * kernels without registered gradients (argmax, one-hot, comparisons). Implemented as a `tf.customGrad` whose forward
 * runs untaped (one output tensor: concatenate several and slice them afterwards).
 */
export function withoutGradient(inputs: readonly tf.Tensor[], f: (...xs: tf.Tensor[]) => tf.Tensor): tf.Tensor {
  const n = inputs.length;
  const g = tf.customGrad(((...args: unknown[]) => {
    const xs = args.slice(0, n) as tf.Tensor[];
    return { value: f(...xs), gradFunc: () => xs.map((x) => tf.zerosLike(x)) };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return g(...inputs);
}

/** Identity in the forward pass, zero gradient (PyTorch's `.detach()`). */
export function stopGradient<T extends tf.Tensor>(x: T): T {
  return withoutGradient([x], (v) => tf.clone(v)) as T;
}

/** Full Gumbel-sigmoid with diagnostics. Differentiable w.r.t. `logits` (the rule's +0.5 has the identity gradient). */
export function gumbelSigmoidDetailed(logits: tf.Tensor2D, noise: tf.Tensor2D, layout: ArchitectureLayout, options: GumbelSigmoidOptions): GumbelSigmoidResult {
  const L = layout.vectorLength;
  const W = layout.widthEntries;
  const D = layout.depthEntries;
  const G = layout.widthGates.length;
  check2d(logits, 'logits', L);
  check2d(noise, 'noise', L);
  if (noise.shape[0] !== logits.shape[0]) {
    throw new ShapeError('noise rows must match logits rows', { field: 'noise', expected: logits.shape, found: noise.shape });
  }
  const order = depthOrderMod(options.depthOrder, D);
  const T = options.temperature;
  const c = layoutConstants(layout);
  return tf.tidy(() => {
    const R = logits.shape[0];
    // Width part: σ((ℓ + g + base) / T)
    const lw = tf.slice(logits, [0, 0], [R, W]);
    const gw = tf.slice(noise, [0, 0], [R, W]);
    let sw = tf.sigmoid(tf.div(tf.add(tf.add(lw, gw), options.base), T)) as tf.Tensor2D; // [R, W]
    let applied: tf.Tensor2D;
    if (options.nonZeroWidth && G > 0) {
      // Kept elements per gate (exact integer counts), then +0.5 on the first element of gates with none kept.
      // The rule's condition carries no gradient (the +0.5 itself has the identity gradient).
      applied = withoutGradient([sw], (s) => {
        const kept = tf.matMul(tf.cast(tf.greaterEqual(s, 0.5), 'float32'), tf.tensor2d(c.membership, [W, G])); // [R, G] exact counts
        return tf.cast(tf.equal(kept, 0), 'float32');
      }) as tf.Tensor2D;
      const add = tf.mul(tf.matMul(applied, tf.tensor2d(c.membershipT, [G, W])), tf.mul(tf.tensor1d(c.firstEntry), 0.5));
      sw = tf.add(sw, add) as tf.Tensor2D;
    } else {
      applied = tf.zeros([R, G]) as tf.Tensor2D;
    }
    // Depth part: importance ordering.
    const ld = tf.slice(logits, [0, W], [R, D]);
    const gd = tf.slice(noise, [0, W], [R, D]);
    // x = reverse(cumsum(softmax(ℓ))): the reversal as a matmul with the exchange matrix (exact; Reverse has no
    // registered gradient in @aptp/core).
    const exchange = new Float32Array(D * D);
    for (let j = 0; j < D; j++) exchange[(D - 1 - j) * D + j] = 1;
    const x = tf.matMul(tf.cumsum(tf.softmax(ld), 1), tf.tensor2d(exchange, [D, D]));
    const eps = 1e-6;
    const lambda = tf.sub(tf.log(tf.add(x, eps)), tf.log1p(tf.neg(tf.sub(x, eps))));
    const t = tf.sigmoid(tf.div(tf.add(tf.add(lambda, gd), options.base), T)) as tf.Tensor2D; // [R, D], draw order
    // Scatter: depth gate order[j] receives t_j (a permutation matrix keeps it differentiable on wasm).
    const perm = new Float32Array(D * D);
    order.forEach((k, j) => (perm[j * D + k] = 1));
    const depth = tf.matMul(t, tf.tensor2d(perm, [D, D]));
    const gates = tf.concat([sw, depth], 1) as tf.Tensor2D;
    return { gates, depthBeforeScatter: t, nonZeroRuleApplied: applied };
  });
}

/** Soft Gumbel-sigmoid gates `[R, L]` of logits `[R, L]` with the given `[R, L]` Gumbel noise (see module doc). */
export function gumbelSigmoid(logits: tf.Tensor2D, noise: tf.Tensor2D, layout: ArchitectureLayout, options: GumbelSigmoidOptions): tf.Tensor2D {
  return tf.tidy(() => {
    const r = gumbelSigmoidDetailed(logits, noise, layout, options);
    tf.dispose([r.depthBeforeScatter, r.nonZeroRuleApplied]);
    return r.gates;
  });
}

/** `g = −log(−log(u + 1e−20) + 1e−20)` evaluated in float32, as the reference's `sample_gumbel`. */
export function gumbelFromUniform(u: ArrayLike<number>): Float32Array {
  const out = new Float32Array(u.length);
  const eps = Math.fround(1e-20);
  for (let i = 0; i < u.length; i++) {
    const inner = Math.fround(-Math.fround(Math.log(Math.fround(u[i]! + eps))));
    out[i] = Math.fround(-Math.fround(Math.log(Math.fround(inner + eps))));
  }
  return out;
}

/**
 * The reference's **eval-mode** noise for an `[R, L]` logit matrix (APTP.md §2.4, golden §6.3): every slice comes
 * from a fresh `torch.Generator().manual_seed(0)`, so the depth slice `[R, D]` is the first `R·D` values of that
 * stream and each width gate `[R, w]` the first `R·w` values (reshaped row-major). Reproduces PyTorch's stream
 * exactly ({@link torchUniformStream}); routing a prompt therefore depends on its row position, as in the reference.
 */
export function evalGumbelNoise(rows: number, layout: ArchitectureLayout): Float32Array {
  const L = layout.vectorLength;
  const W = layout.widthEntries;
  const D = layout.depthEntries;
  let maxW = D;
  for (const g of layout.widthGates) maxW = Math.max(maxW, g.width);
  const g = gumbelFromUniform(torchUniformStream(rows * maxW, 0));
  const out = new Float32Array(rows * L);
  for (let r = 0; r < rows; r++) {
    for (const gate of layout.widthGates) {
      for (let k = 0; k < gate.width; k++) out[r * L + gate.offset + k] = g[r * gate.width + k]!;
    }
    for (let j = 0; j < D; j++) out[r * L + W + j] = g[r * D + j]!;
  }
  return out;
}

/**
 * Training-time Gumbel noise `[R, L]` from seeded generators: row r uses `rngs[r]` (key them per sample, e.g.
 * `Rng.forKey(seed, 'gumbel', step, sampleId)`, so the noise does not depend on batch composition), or one
 * generator for all rows. Uniforms have 24 random bits in [0, 1), like `torch.rand` in float32.
 */
export function sampleGumbelNoise(rngs: Rng | readonly Rng[], rows: number, length: number): Float32Array {
  const u = new Float32Array(rows * length);
  for (let r = 0; r < rows; r++) {
    const rng = Array.isArray(rngs) ? (rngs as readonly Rng[])[r] : (rngs as Rng);
    if (!rng) throw new ShapeError('one generator per row is required', { field: 'rngs', expected: rows, found: (rngs as readonly Rng[]).length });
    for (let i = 0; i < length; i++) u[r * length + i] = Math.floor(rng.nextDouble() * 16777216) / 16777216;
  }
  return gumbelFromUniform(u);
}
