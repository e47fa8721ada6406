import * as tf from '@tensorflow/tfjs-core';
import { customGrad } from './customGrad';

/**
 * Multi-head attention computed per image and per head with plain 2-D matmuls, with a hand-written gradient
 * (STACK.md §2 workarounds B and C): tfjs-wasm's batched matmul is ~8× slower than a loop of 2-D matmuls and every
 * transposed matmul is a cliff, so neither the forward nor the backward uses a batched or transposed matmul. Only
 * the small `[S, d]` operands are ever transposed; the `[S, T]` probability matrices never are.
 *
 * q `[B, S, h·d]`, k/v `[B, T, h·d]` → `[B, S, h·d]`; head j = channels `j·d … j·d+d−1`; `softmax(q kᵀ/√d) v`.
 */
export function multiHeadAttention(q: tf.Tensor3D, k: tf.Tensor3D, v: tf.Tensor3D, heads: number, path: AttentionPath = 'auto'): tf.Tensor3D {
  const n = q.shape[0] * heads;
  const dense = path === 'dense' || (path === 'auto' && n > 1 && n * q.shape[1] * n * k.shape[1] <= DENSE_ATTENTION_LIMIT);
  return (dense ? denseAttentionFn(heads) : attentionFn(heads))(q, k, v) as tf.Tensor3D;
}

/**
 * `loop`: one 2-D matmul pair per (image, head); `dense`: all N = B·h heads at once as one block-diagonal attention
 * (below); `auto`: dense while the `[N·S, N·T]` score matrix stays under `DENSE_ATTENTION_LIMIT` entries.
 */
export type AttentionPath = 'auto' | 'dense' | 'loop';

/**
 * Score entries up to which the dense path is used. Small attentions (a few hundred tokens over all heads, as in the
 * low-resolution blocks of the synthetic teachers) are dominated by the per-(image, head) kernel launches and slices
 * of the loop (tools/bench); the dense path spends N× the multiply-adds in four large XNNPACK matmuls instead.
 */
export const DENSE_ATTENTION_LIMIT = 1 << 19;

/** Additive mask `[N·S, N·T]`: 0 inside the N diagonal `S×T` blocks, −1e9 elsewhere (softmax gives exact zeros). */
const maskCache = new Map<string, Float32Array>();
function blockMask(n: number, s: number, t: number): Float32Array {
  const key = `${n},${s},${t}`;
  let m = maskCache.get(key);
  if (!m) {
    m = new Float32Array(n * s * n * t).fill(-1e9);
    for (let i = 0; i < n; i++) for (let r = 0; r < s; r++) m.fill(0, (i * s + r) * n * t + i * t, (i * s + r) * n * t + (i + 1) * t);
    if (maskCache.size >= 8) maskCache.clear(); // ≤ 8 masks of ≤ 2 MB
    maskCache.set(key, m);
  }
  return m;
}

/**
 * All heads at once: with Q `[N·S, d]`, K, V `[N·T, d]` (head i = rows i·S… / i·T…) and the block mask M,
 * P = softmax(Q Kᵀ/√d + M) is block diagonal, so P V holds every head's `softmax(q kᵀ/√d) v`. Backward:
 * dP = dY Vᵀ, dS = P ⊙ (dP − rowsum(dP ⊙ P))/√d (zero off the blocks), dQ = dS K, dKᵀ = Qᵀ dS, dVᵀ = dYᵀ P — only
 * the `[·, d]` operands are transposed, never the score matrices.
 */
function denseAttentionFn(h: number): (q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) => tf.Tensor {
  return customGrad((q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, save: tf.GradSaveFunc) => {
    const b = q.shape[0]!;
    const d = q.shape[2]! / h;
    const n = b * h;
    const S = q.shape[1]!;
    const T = k.shape[1]!;
    const scale = 1 / Math.sqrt(d);
    const rows = (x: tf.Tensor, len: number): tf.Tensor2D => tf.reshape(splitHeads(x, h), [n * len, d]);
    const qr = rows(q, S);
    const kt = tf.transpose(rows(k, T)); // [d, N·T]
    const mask = tf.tensor2d(blockMask(n, S, T), [n * S, n * T]);
    const p = tf.softmax(tf.add(tf.mul(tf.matMul(qr, kt), scale), mask)) as tf.Tensor2D; // [N·S, N·T]
    save([q, k, v, p]);
    const out = tf.matMul(p, rows(v, T)); // [N·S, d]
    return {
      value: mergeHeads(tf.reshape(out, [n, S, d]), b, h),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sq, sk, sv, sp] = saved as [tf.Tensor3D, tf.Tensor3D, tf.Tensor3D, tf.Tensor2D];
        const dyr = rows(dy, S); // [N·S, d]
        const dP = tf.matMul(dyr, tf.transpose(rows(sv, T))); // [N·S, N·T]
        const dS = tf.mul(tf.mul(sp, tf.sub(dP, tf.sum(tf.mul(dP, sp), -1, true))), scale);
        const dq = tf.matMul(dS, rows(sk, T)); // [N·S, d]
        const dkT = tf.matMul(tf.transpose(rows(sq, S)), dS) as tf.Tensor2D; // [d, N·T]
        const dvT = tf.matMul(tf.transpose(dyr), sp) as tf.Tensor2D; // [d, N·T]
        const back = (x: tf.Tensor2D, len: number): tf.Tensor3D => mergeHeads(tf.reshape(tf.transpose(x), [n, len, d]), b, h);
        return [mergeHeads(tf.reshape(dq, [n, S, d]), b, h), back(dkT, T), back(dvT, T)];
      },
    };
  });
}

/** `[B, S, h·d]` → `[B·h, S, d]` (heads made contiguous; one transpose, none when h = 1). */
function splitHeads(x: tf.Tensor, h: number): tf.Tensor3D {
  const [b, s, c] = x.shape as [number, number, number];
  const d = c / h;
  if (h === 1) return tf.reshape(x, [b, s, d]);
  return tf.reshape(tf.transpose(tf.reshape(x, [b, s, h, d]), [0, 2, 1, 3]), [b * h, s, d]);
}

/** `[B, S, h·d]` → `[B·h, d, S]` (per-head transposed operand). */
function splitHeadsT(x: tf.Tensor, h: number): tf.Tensor3D {
  const [b, s, c] = x.shape as [number, number, number];
  const d = c / h;
  return tf.reshape(tf.transpose(tf.reshape(x, [b, s, h, d]), [0, 2, 3, 1]), [b * h, d, s]);
}

/** `[B·h, S, d]` → `[B, S, h·d]`. */
function mergeHeads(x: tf.Tensor, b: number, h: number): tf.Tensor3D {
  const [, s, d] = x.shape as [number, number, number];
  if (h === 1) return tf.reshape(x, [b, s, d]);
  return tf.reshape(tf.transpose(tf.reshape(x, [b, h, s, d]), [0, 2, 1, 3]), [b, s, h * d]);
}

/** `[B·h, d, T]` → `[B, T, h·d]`. */
function mergeHeadsT(x: tf.Tensor, b: number, h: number): tf.Tensor3D {
  const [, d, t] = x.shape as [number, number, number];
  return tf.reshape(tf.transpose(tf.reshape(x, [b, h, d, t]), [0, 3, 1, 2]), [b, t, h * d]);
}

function item(x: tf.Tensor3D, i: number): tf.Tensor2D {
  const [n, r, c] = x.shape;
  if (n === 1) return tf.reshape(x, [r, c]);
  return tf.reshape(tf.slice(x, [i, 0, 0], [1, r, c]), [r, c]);
}

function stack(parts: tf.Tensor2D[]): tf.Tensor3D {
  if (parts.length === 1) return tf.expandDims(parts[0]!, 0) as tf.Tensor3D;
  return tf.stack(parts) as tf.Tensor3D;
}

function attentionFn(h: number): (q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) => tf.Tensor {
  return customGrad((q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, save: tf.GradSaveFunc) => {
    const b = q.shape[0]!;
    const d = q.shape[2]! / h;
    const scale = 1 / Math.sqrt(d);
    const qh = splitHeads(q, h); // [B·h, S, d]
    const kt = splitHeadsT(k, h); // [B·h, d, T]
    const vh = splitHeads(v, h); // [B·h, T, d]
    const probs: tf.Tensor2D[] = [];
    const outs: tf.Tensor2D[] = [];
    for (let i = 0; i < b * h; i++) {
      const p = tf.softmax(tf.mul(tf.matMul(item(qh, i), item(kt, i)), scale)) as tf.Tensor2D; // [S, T]
      probs.push(p);
      outs.push(tf.matMul(p, item(vh, i))); // [S, d]
    }
    save([q, k, v, ...probs]); // the [S, T] probabilities are kept per (image, head): no stacking copy
    return {
      value: mergeHeads(stack(outs), b, h),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sq, sk, sv] = saved as [tf.Tensor3D, tf.Tensor3D, tf.Tensor3D];
        const sp = saved.slice(3) as tf.Tensor2D[];
        const dyh = splitHeads(dy, h); // [B·h, S, d]
        const dyt = splitHeadsT(dy, h); // [B·h, d, S]
        const vt = splitHeadsT(sv, h); // [B·h, d, T]
        const kh = splitHeads(sk, h); // [B·h, T, d]
        const qt = splitHeadsT(sq, h); // [B·h, d, S]
        const dq: tf.Tensor2D[] = [];
        const dkT: tf.Tensor2D[] = [];
        const dvT: tf.Tensor2D[] = [];
        for (let i = 0; i < b * h; i++) {
          const p = sp[i]!;
          const dP = tf.matMul(item(dyh, i), item(vt, i)); // [S, T]
          const dS = tf.mul(tf.mul(p, tf.sub(dP, tf.sum(tf.mul(dP, p), -1, true))), scale); // [S, T]
          dq.push(tf.matMul(dS, item(kh, i))); // [S, d]
          dkT.push(tf.matMul(item(qt, i), dS)); // [d, T] = (dSᵀ q)ᵀ
          dvT.push(tf.matMul(item(dyt, i), p)); // [d, T] = (pᵀ dy)ᵀ
        }
        return [mergeHeads(stack(dq), b, h), mergeHeadsT(stack(dkT), b, h), mergeHeadsT(stack(dvT), b, h)];
      },
    };
  });
}
