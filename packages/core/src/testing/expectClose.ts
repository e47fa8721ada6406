import * as tf from '@tensorflow/tfjs-core';

type Numeric = tf.Tensor | ArrayLike<number> | number;

function toArray(x: Numeric): ArrayLike<number> {
  if (typeof x === 'number') return [x];
  if (x instanceof tf.Tensor) return x.dataSync() as ArrayLike<number>;
  return x;
}

export interface CloseOptions {
  /** Name used in the failure message. */
  name?: string;
  /** Relative tolerance: max|ours-ref| <= rtol * max(1, max|ref|) (default 1e-4, STYLE.md §3 Tests). */
  rtol?: number;
  /** Absolute tolerance instead of the scaled one. */
  atol?: number;
  /** Expected shape, checked when `actual` is a tensor. */
  shape?: number[];
}

export interface CloseReport {
  maxAbsDiff: number;
  index: number;
  maxAbsRef: number;
  tol: number;
}

export function compareClose(actual: Numeric, expected: Numeric, options: CloseOptions = {}): CloseReport {
  const a = toArray(actual);
  const e = toArray(expected);
  if (a.length !== e.length) {
    throw new Error(`${options.name ?? 'tensor'}: length ${a.length} != expected ${e.length}`);
  }
  let maxAbsRef = 0;
  for (let i = 0; i < e.length; i++) maxAbsRef = Math.max(maxAbsRef, Math.abs(e[i]!));
  const tol = options.atol ?? (options.rtol ?? 1e-4) * Math.max(1, maxAbsRef);
  let maxAbsDiff = 0;
  let index = -1;
  for (let i = 0; i < e.length; i++) {
    const d = Math.abs(a[i]! - e[i]!);
    if (!(d <= maxAbsDiff) || Number.isNaN(d)) {
      maxAbsDiff = Number.isNaN(d) ? Infinity : d;
      index = i;
    }
  }
  return { maxAbsDiff, index, maxAbsRef, tol };
}

/**
 * Asserts `max|actual − expected| <= tol`; the failure names the tensor, the error, the tolerance and the index.
 */
export function expectClose(actual: Numeric, expected: Numeric, options: CloseOptions = {}): CloseReport {
  if (options.shape && actual instanceof tf.Tensor) {
    if (JSON.stringify(actual.shape) !== JSON.stringify(options.shape)) {
      throw new Error(`${options.name ?? 'tensor'}: shape [${actual.shape}] != expected [${options.shape}]`);
    }
  }
  const r = compareClose(actual, expected, options);
  if (!(r.maxAbsDiff <= r.tol)) {
    const a = toArray(actual);
    const e = toArray(expected);
    throw new Error(
      `${options.name ?? 'tensor'}: max|ours-ref| = ${r.maxAbsDiff.toExponential(3)} > tol ${r.tol.toExponential(3)} ` +
        `at index ${r.index} (ours ${a[r.index]}, ref ${e[r.index]}, max|ref| ${r.maxAbsRef.toExponential(3)})`,
    );
  }
  return r;
}
