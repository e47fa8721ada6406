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
export function multiHeadAttention(q: tf.Tensor3D, k: tf.Tensor3D, v: tf.Tensor3D, heads: number): tf.Tensor3D {
  return attentionFn(heads)(q, k, v) as tf.Tensor3D;
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
