import * as tf from '@tensorflow/tfjs-core';

/**
 * Gradients of the plain tfjs kernels differentiable code uses.
 *
 * `@tensorflow/tfjs-core` 4.22 registers **no** gradients by itself: they live only in its ESM files
 * (`dist/register_all_gradients.js` with extension-less imports), which neither Node's CommonJS/ESM loaders nor
 * Jest (without transforming node_modules) can load; the umbrella `@tensorflow/tfjs` would bundle them. So core
 * registers what it needs here, once, and only for kernels that have no gradient yet (if the official table is
 * loaded by a bundler, it wins). Every gradient is built from forward kernels that exist on wasm, and none uses a
 * transposed or batched matmul (STACK.md §2). Convolutions, 2-D matmuls and attention have their own custom
 * gradients in this folder; `BatchMatMul` is registered for convenience (explicit transposes, no flags).
 */

type GradMap = Record<string, () => tf.Tensor> | Array<() => tf.Tensor>;
type GradFn = (dy: tf.Tensor, saved: tf.Tensor[], attrs: Record<string, unknown>) => GradMap;

/** Sums `dy` over the axes broadcast against `shape`, then reshapes to `shape`. */
function reduceTo(dy: tf.Tensor, shape: number[]): tf.Tensor {
  const axes = tf.backend_util.getReductionAxes(shape, dy.shape);
  if (axes.length === 0) return tf.reshape(dy, shape);
  // Summing leading axes (a bias gradient: [N,H,W,C] → [C]) as a ones-row matmul is ~30× faster on wasm than Sum.
  if (axes.every((a, k) => a === k)) {
    const rows = dy.shape.slice(0, axes.length).reduce((p, n) => p * n, 1);
    const cols = dy.size / rows;
    return tf.reshape(tf.matMul(tf.ones([1, rows]), tf.reshape(dy, [rows, cols])), shape);
  }
  return tf.reshape(tf.sum(dy, axes), shape);
}

/** float32 view of a saved input without a copy when it already is float32. */
function asFloat(t: tf.Tensor): tf.Tensor {
  return t.dtype === 'float32' ? t : tf.cast(t, 'float32');
}

function axesOf(axis: number | number[], rank: number): number[] {
  return tf.util.parseAxisParam(axis, new Array<number>(rank).fill(1));
}

/** dy of a reduction, reshaped with the reduced axes kept (size 1) so it broadcasts against x. */
function keepReduced(dy: tf.Tensor, xShape: number[], axes: number[]): tf.Tensor {
  return tf.reshape(dy, xShape.map((n, i) => (axes.includes(i) ? 1 : n)));
}

function register(kernelName: string, inputsToSave: string[] | 'all', gradFunc: GradFn, outputsToSave?: boolean[]): void {
  if (tf.getGradient(kernelName) !== undefined) return;
  tf.registerGradient({
    kernelName,
    ...(inputsToSave === 'all' ? { saveAllInputs: true } : { inputsToSave }),
    ...(outputsToSave ? { outputsToSave } : {}),
    gradFunc: gradFunc as never,
  });
}

let registered = false;

/** Registers the gradients (idempotent). Called when `EagerOps` is imported. */
export function registerEagerGradients(): void {
  if (registered) return;
  registered = true;

  // ---- binary elementwise (with broadcasting) ----------------------------------------------------------------
  register('Add', ['a', 'b'], (dy, [a, b]) => ({ a: () => reduceTo(dy, a!.shape), b: () => reduceTo(dy, b!.shape) }));
  register('AddN', 'all', (dy, saved) => saved.map(() => () => tf.clone(dy)));
  register('Sub', ['a', 'b'], (dy, [a, b]) => ({ a: () => reduceTo(dy, a!.shape), b: () => reduceTo(tf.neg(dy), b!.shape) }));
  register('Multiply', ['a', 'b'], (dy, [a, b]) => ({
    a: () => reduceTo(tf.mul(dy, asFloat(b!)), a!.shape),
    b: () => reduceTo(tf.mul(dy, asFloat(a!)), b!.shape),
  }));
  register('RealDiv', ['a', 'b'], (dy, [a, b]) => ({
    a: () => reduceTo(tf.div(dy, b!), a!.shape),
    b: () => reduceTo(tf.neg(tf.div(tf.mul(dy, a!), tf.square(b!))), b!.shape),
  }));
  register('SquaredDifference', ['a', 'b'], (dy, [a, b]) => {
    const two = () => tf.mul(tf.mul(dy, 2), tf.sub(a!, b!));
    return { a: () => reduceTo(two(), a!.shape), b: () => reduceTo(tf.neg(two()), b!.shape) };
  });
  register('Maximum', ['a', 'b'], (dy, [a, b]) => ({
    a: () => reduceTo(tf.mul(dy, tf.cast(tf.greaterEqual(a!, b!), 'float32')), a!.shape),
    b: () => reduceTo(tf.mul(dy, tf.cast(tf.less(a!, b!), 'float32')), b!.shape),
  }));
  register('Minimum', ['a', 'b'], (dy, [a, b]) => ({
    a: () => reduceTo(tf.mul(dy, tf.cast(tf.lessEqual(a!, b!), 'float32')), a!.shape),
    b: () => reduceTo(tf.mul(dy, tf.cast(tf.greater(a!, b!), 'float32')), b!.shape),
  }));

  // ---- unary elementwise -------------------------------------------------------------------------------------
  register('Neg', [], (dy) => ({ x: () => tf.neg(dy) }));
  register('Identity', [], (dy) => ({ x: () => tf.clone(dy) }));
  register('Cast', [], (dy) => ({ x: () => tf.clone(dy) }));
  register('Square', ['x'], (dy, [x]) => ({ x: () => tf.mul(dy, tf.mul(x!, 2)) }));
  register('Sqrt', ['x'], (dy, [x]) => ({ x: () => tf.div(dy, tf.mul(tf.sqrt(x!), 2)) }));
  register('Rsqrt', ['x'], (dy, [x]) => ({ x: () => tf.div(dy, tf.mul(tf.pow(x!, 1.5), -2)) }));
  register('Reciprocal', ['x'], (dy, [x]) => ({ x: () => tf.neg(tf.div(dy, tf.square(x!))) }));
  register('Exp', [], (dy, [y]) => ({ x: () => tf.mul(dy, y!) }), [true]);
  register('Log', ['x'], (dy, [x]) => ({ x: () => tf.div(dy, x!) }));
  register('Log1p', ['x'], (dy, [x]) => ({ x: () => tf.div(dy, tf.add(x!, 1)) }));
  register('Sigmoid', [], (dy, [y]) => ({ x: () => tf.mul(dy, tf.mul(y!, tf.sub(1, y!))) }), [true]);
  register('Tanh', [], (dy, [y]) => ({ x: () => tf.mul(dy, tf.sub(1, tf.square(y!))) }), [true]);
  register('Softplus', ['x'], (dy, [x]) => ({ x: () => tf.mul(dy, tf.sigmoid(x!)) }));
  register('Relu', ['x'], (dy, [x]) => ({ x: () => tf.mul(dy, tf.cast(tf.greater(x!, 0), 'float32')) }));
  register('Abs', ['x'], (dy, [x]) => ({ x: () => tf.mul(dy, tf.sign(x!)) }));
  register('Sin', ['x'], (dy, [x]) => ({ x: () => tf.mul(dy, tf.cos(x!)) }));
  register('Cos', ['x'], (dy, [x]) => ({ x: () => tf.neg(tf.mul(dy, tf.sin(x!))) }));
  register('Erf', ['x'], (dy, [x]) => ({ x: () => tf.mul(dy, tf.mul(tf.exp(tf.neg(tf.square(x!))), 2 / Math.sqrt(Math.PI))) }));
  register('ClipByValue', ['x'], (dy, [x], attrs) => {
    const { clipValueMin: lo, clipValueMax: hi } = attrs as { clipValueMin: number; clipValueMax: number };
    return { x: () => tf.mul(dy, tf.cast(tf.logicalAnd(tf.greaterEqual(x!, lo), tf.lessEqual(x!, hi)), 'float32')) };
  });

  // ---- reductions --------------------------------------------------------------------------------------------
  register('Sum', ['x'], (dy, [x], attrs) => {
    const axes = axesOf(attrs.axis as number | number[], x!.rank);
    return { x: () => tf.mul(keepReduced(dy, x!.shape, axes), tf.ones(x!.shape)) };
  });
  register('Mean', ['x'], (dy, [x], attrs) => {
    const axes = axesOf(attrs.axis as number | number[], x!.rank);
    const count = axes.reduce((p, a) => p * x!.shape[a]!, 1);
    return { x: () => tf.mul(keepReduced(tf.div(dy, count), x!.shape, axes), tf.ones(x!.shape)) };
  });
  register('Max', ['x'], (dy, [x, y], attrs) => {
    const axes = axesOf(attrs.reductionIndices as number | number[], x!.rank);
    const mask = tf.cast(tf.equal(x!, keepReduced(y!, x!.shape, axes)), 'float32');
    return { x: () => tf.mul(mask, keepReduced(dy, x!.shape, axes)) };
  }, [true]);
  register('Cumsum', [], (dy, _saved, attrs) => {
    const { axis, exclusive, reverse } = attrs as { axis: number; exclusive: boolean; reverse: boolean };
    return { x: () => tf.cumsum(dy, axis, exclusive, !reverse) };
  });
  register('Softmax', [], (dy, [y], attrs) => {
    const dim = attrs.dim as number;
    return { logits: () => tf.mul(y!, tf.sub(dy, tf.sum(tf.mul(dy, y!), dim, true))) };
  }, [true]);

  // ---- data movement -----------------------------------------------------------------------------------------
  register('Reshape', ['x'], (dy, [x]) => ({ x: () => tf.reshape(dy, x!.shape) }));
  register('Transpose', [], (dy, _saved, attrs) => {
    const perm = attrs.perm as number[];
    const inv = new Array<number>(perm.length);
    perm.forEach((p, i) => (inv[p] = i));
    return { x: () => tf.transpose(dy, inv) };
  });
  register('Slice', ['x'], (dy, [x], attrs) => {
    const [begin, size] = tf.slice_util.parseSliceParams(x!, attrs.begin as number[], attrs.size as number[]);
    return { x: () => tf.pad(dy, x!.shape.map((n, i) => [begin[i]!, n - begin[i]! - size[i]!] as [number, number])) };
  });
  register('PadV2', [], (dy, _saved, attrs) => {
    const pads = attrs.paddings as Array<[number, number]>;
    return { x: () => tf.slice(dy, pads.map((p) => p[0]), pads.map((p, i) => dy.shape[i]! - p[0] - p[1])) };
  });
  register('Concat', 'all', (dy, saved, attrs) => {
    const axis = tf.util.parseAxisParam(attrs.axis as number, saved[0]!.shape)[0]!;
    const parts = tf.split(dy, saved.map((s) => s.shape[axis]!), axis);
    return parts.map((p) => () => p);
  });
  register('Pack', 'all', (dy, saved, attrs) => tf.unstack(dy, attrs.axis as number).map((p) => () => p).slice(0, saved.length));
  register('Tile', ['x'], (dy, [x], attrs) => {
    // dy has shape reps·x: view it as [r0, x0, r1, x1, …] and sum the rep axes.
    const reps = attrs.reps as number[];
    const split = x!.shape.flatMap((n, i) => [reps[i]!, n]);
    const axes = reps.map((_, i) => 2 * i);
    return { x: () => tf.reshape(tf.sum(tf.reshape(dy, split), axes), x!.shape) };
  });
  register('BatchMatMul', ['a', 'b'], (dy, [a, b], attrs) => {
    const { transposeA, transposeB } = attrs as { transposeA: boolean; transposeB: boolean };
    const t = (m: tf.Tensor) => tf.transpose(m, [...m.shape.keys()].map((i, _, all) => (i < all.length - 2 ? i : i === all.length - 2 ? all.length - 1 : all.length - 2)));
    const mm = (p: tf.Tensor, q: tf.Tensor) => tf.matMul(p, q);
    // C = op(A)·op(B); dop(A) = dy·op(B)ᵀ, dop(B) = op(A)ᵀ·dy; undo the op.
    const opA = transposeA ? t(a!) : a!;
    const opB = transposeB ? t(b!) : b!;
    return {
      a: () => {
        const g = mm(dy, t(opB));
        return reduceTo(transposeA ? t(g) : g, a!.shape);
      },
      b: () => {
        const g = mm(t(opA), dy);
        return reduceTo(transposeB ? t(g) : g, b!.shape);
      },
    };
  });
}
