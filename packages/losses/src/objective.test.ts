import * as tf from '@tensorflow/tfjs-core';
import { InputError } from '@aptp/core';
import { expectClose, expectNoTensorLeak } from '@aptp/core/testing';
import { defaultLossesConfig } from './config';
import { lossWeights, objective, readObjective } from './objective';

describe('objective', () => {
  const W = lossWeights(defaultLossesConfig());

  it('sums weight·term in the reference order and reports each weighted term', async () => {
    const terms = {
      diffusion: tf.scalar(0.9837),
      resource: tf.scalar(0.1156),
      contrastive: tf.scalar(1.0028),
      distillation: tf.scalar(0.4172),
      block: tf.scalar(5.9908),
      std: tf.scalar(-0.2152),
      max: tf.scalar(0.08),
    };
    const r = objective(terms, W);
    const read = await readObjective(r);
    const expected = 0.9837 + 2 * 0.1156 + 100 * 1.0028 + 0.2 * 0.4172 + 0.2 * 5.9908 + 0.1 * -0.2152 + 0.1 * 0.08;
    expect(read.total).toBeCloseTo(expected, 4);
    expect(read.contrastive).toBeCloseTo(100.28, 4);
    expect(read.std).toBeCloseTo(-0.02152, 6);
    tf.dispose([...Object.values(terms), r.total, ...Object.values(r.weighted)]);
  });

  it('leaves out missing terms and zero-weight terms (a NaN there does not poison the total)', async () => {
    const terms = { diffusion: tf.scalar(2), distillation: tf.scalar(1), std: tf.scalar(NaN) };
    const r = objective(terms, { ...W, std: 0, distillation: 0.5 });
    expect(Object.keys(r.weighted)).toEqual(['diffusion', 'distillation']);
    expectClose(r.total, 2.5, { atol: 1e-7 });
    expect(await readObjective(r)).toEqual({ total: 2.5, diffusion: 2, distillation: 0.5 });
    tf.dispose([...Object.values(terms), r.total, ...Object.values(r.weighted)]);
  });

  it('is differentiable: d total / d term = weight', () => {
    const x = tf.scalar(0.3);
    const y = tf.scalar(0.7);
    const [gx, gy] = tf.grads((a: tf.Tensor, b: tf.Tensor) => objective({ resource: a as tf.Scalar, contrastive: b as tf.Scalar }, W).total)([x, y]);
    expectClose(gx!, 2, { atol: 0 });
    expectClose(gy!, 100, { atol: 0 });
    tf.dispose([x, y, gx!, gy!]);
  });

  it('rejects non-scalar and unknown terms', () => {
    const v = tf.tensor1d([1, 2]);
    expect(() => objective({ diffusion: v as unknown as tf.Scalar }, W)).toThrow(/diffusion: loss terms must be scalars/);
    expect(() => objective({ kl: tf.scalar(1) } as never, W)).toThrow(InputError);
    v.dispose();
  });

  it('leaks no tensors', async () => {
    const t = { diffusion: tf.scalar(1), block: tf.scalar(2) };
    await expectNoTensorLeak(() => {
      const r = objective(t, W);
      tf.dispose([r.total, ...Object.values(r.weighted)]);
    });
    tf.dispose(Object.values(t));
  });
});

describe('objective inside a gradient closure', () => {
  it('leaves nothing behind when only the total is returned (tf.variableGrads)', async () => {
    const v = tf.variable(tf.scalar(0.25));
    const c = tf.scalar(3);
    await expectNoTensorLeak(() => {
      const { value, grads } = tf.variableGrads(() => objective({ resource: v as unknown as tf.Scalar, block: c }, lossWeights(defaultLossesConfig())).total);
      tf.dispose([value, ...Object.values(grads)]);
    });
    tf.dispose([v, c]);
  });
});
