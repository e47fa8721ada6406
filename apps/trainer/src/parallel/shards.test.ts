import * as tf from '@tensorflow/tfjs-core';
import { ShapeError } from '@aptp/core';
import { combineShardGradients, flattenTensors, parameterKeys, shardRanges, teacherShards } from './shards';

describe('shardRanges', () => {
  it('cuts B rows into contiguous shards whose sizes differ by at most one, never empty', () => {
    for (const [B, n] of [[16, 2], [7, 3], [3, 5], [1, 1], [32, 4]] as const) {
      const r = shardRanges(B, n);
      expect(r.length).toBe(Math.min(B, n));
      expect(r[0]![0]).toBe(0);
      expect(r[r.length - 1]![1]).toBe(B);
      r.forEach(([a, b], i) => {
        expect(b).toBeGreaterThan(a);
        if (i > 0) expect(a).toBe(r[i - 1]![1]);
      });
      const sizes = r.map(([a, b]) => b - a);
      expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
    }
    expect(shardRanges(7, 3)).toEqual([[0, 3], [3, 5], [5, 7]]);
  });

  it('rejects a non-positive shard count, naming the field', () => {
    expect(() => shardRanges(4, 0)).toThrow(ShapeError);
    expect(() => shardRanges(4, 1.5)).toThrow(/workers/);
  });
});

describe('teacherShards', () => {
  it('slices images, noise, timesteps and text states by rows', () => {
    const B = 5;
    const x0 = tf.tensor4d(Float32Array.from({ length: B * 3 * 2 * 2 }, (_, i) => i), [B, 3, 2, 2]);
    const noise = tf.tensor4d(Float32Array.from({ length: B * 12 }, (_, i) => -i), [B, 3, 2, 2]);
    const context = tf.tensor3d(Float32Array.from({ length: B * 4 * 3 }, (_, i) => i / 10), [B, 4, 3]);
    const timesteps = Int32Array.from([10, 20, 30, 40, 50]);
    try {
      const s = teacherShards({ x0, noise, timesteps, prompts: [], rows: [] }, context, 2);
      expect(s.map((x) => x.shape)).toEqual([[3, 3, 2, 2], [2, 3, 2, 2]]);
      expect(Array.from(s[1]!.x0)).toEqual(Array.from(x0.dataSync().subarray(36)));
      expect(Array.from(s[1]!.noise)).toEqual(Array.from(noise.dataSync().subarray(36)));
      expect(Array.from(s[0]!.timesteps)).toEqual([10, 20, 30]);
      expect(s[1]!.contextShape).toEqual([2, 4, 3]);
      expect(Array.from(s[1]!.context)).toEqual(Array.from(context.dataSync().subarray(36)));
    } finally {
      tf.dispose([x0, noise, context]);
    }
  });
});

describe('combineShardGradients', () => {
  it('is the row-weighted mean of the shard losses and gradients, split back into the parameter shapes', () => {
    const params = { b: tf.zeros([2]), a: tf.zeros([2, 2]) };
    const keys = parameterKeys(params);
    expect(keys).toEqual(['a', 'b']);
    const shapes = { a: [2, 2], b: [2] };
    const g1 = Float32Array.from([1, 2, 3, 4, 5, 6]);
    const g2 = Float32Array.from([7, 8, 9, 10, 11, 12]);
    const { loss, grads } = combineShardGradients(
      [
        { loss: 1, grads: g1, rows: 3 },
        { loss: 2, grads: g2, rows: 1 },
      ],
      keys,
      shapes,
    );
    try {
      expect(loss).toBeCloseTo(1.25, 12);
      expect(grads.a!.shape).toEqual([2, 2]);
      expect(Array.from(grads.a!.dataSync())).toEqual([0, 1, 2, 3].map((i) => (3 * g1[i]! + g2[i]!) / 4));
      expect(Array.from(grads.b!.dataSync())).toEqual([4, 5].map((i) => (3 * g1[i]! + g2[i]!) / 4));
      expect(Array.from(flattenTensors(grads, keys))).toEqual([0, 1, 2, 3, 4, 5].map((i) => Math.fround((3 * g1[i]! + g2[i]!) / 4)));
    } finally {
      tf.dispose([...Object.values(params), ...Object.values(grads)]);
    }
  });

  it('rejects shards of different gradient lengths', () => {
    expect(() =>
      combineShardGradients(
        [
          { loss: 0, grads: new Float32Array(2), rows: 1 },
          { loss: 0, grads: new Float32Array(3), rows: 1 },
        ],
        ['a'],
        { a: [2] },
      ),
    ).toThrow(/grads/);
  });
});
