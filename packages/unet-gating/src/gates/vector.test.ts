import * as tf from '@tensorflow/tfjs-core';
import { ShapeError } from '@aptp/core';
import { describeBackends, expectClose, expectNoTensorLeak } from '@aptp/core/testing';
import { parseUNetConfig } from '../config';
import { architectureLayout, withAptpGating } from './layout';
import type { SubBlockGates } from './vector';
import { checkArchVector, disposeGates, expandGate, hardArchitecture, hardGates, hardStraightThrough, keptFraction, splitArchVector } from './vector';

/** A small 3-level config with cross-attention everywhere: 3·(2+2)+... sub-blocks, depth gates on down/up. */
const layout = architectureLayout(
  withAptpGating(
    parseUNetConfig({
      block_out_channels: [8, 16],
      norm_num_groups: 4,
      attention_head_dim: [2, 4],
      layers_per_block: 1,
      cross_attention_dim: 8,
      down_block_types: ['CrossAttnDownBlock2D', 'DownBlock2D'],
      up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D'],
    }),
    4,
  ),
);

function rowValues(b: number, l: number): Float32Array {
  return Float32Array.from({ length: b * l }, (_, i) => ((i * 37) % 101) / 100);
}

describeBackends('architecture vectors', () => {
  const L = layout.vectorLength;

  it('splits [B, L] into the gates at their offsets, and back', () => {
    const data = rowValues(3, L);
    const v = tf.tensor2d(data, [3, L]);
    const gates = splitArchVector(layout, v);
    for (const sb of layout.subBlocks) {
      const g = gates[sb.name]!;
      const parts: tf.Tensor2D[] = [];
      for (const gi of sb.gates) {
        const wg = layout.widthGates[gi]!;
        const t = { resnetGroups: g.resnetGate, selfAttnHeads: g.selfAttnHeadGate, crossAttnHeads: g.crossAttnHeadGate, ffGroups: g.ffGate }[wg.kind]!;
        expect(t.shape).toEqual([3, wg.width]);
        parts.push(t);
        const expected = [0, 1, 2].flatMap((b) => Array.from(data.subarray(b * L + wg.offset, b * L + wg.end)));
        expectClose(t, expected, { name: wg.name, atol: 0 });
      }
      if (sb.depthVectorIndex !== null) {
        expect(g.depthGate!.shape).toEqual([3]);
        expectClose(g.depthGate!, [0, 1, 2].map((b) => data[b * L + sb.depthVectorIndex!]!), { name: `${sb.name} depth`, atol: 0 });
      } else {
        expect(g.depthGate).toBeUndefined();
      }
    }
    disposeGates(gates);
    v.dispose();
  });

  it('is differentiable: the vector-Jacobian product of each piece is dy placed at its columns', () => {
    const v = tf.tensor2d(rowValues(2, L), [2, L]);
    for (const sb of layout.subBlocks) {
      const pieces: Array<[keyof SubBlockGates, number, number]> = sb.gates.map((gi) => {
        const wg = layout.widthGates[gi]!;
        return [({ resnetGroups: 'resnetGate', selfAttnHeads: 'selfAttnHeadGate', crossAttnHeads: 'crossAttnHeadGate', ffGroups: 'ffGate' } as const)[wg.kind], wg.offset, wg.width];
      });
      if (sb.depthVectorIndex !== null) pieces.push(['depthGate', sb.depthVectorIndex, 1]);
      for (const [key, offset, width] of pieces) {
        const dyData = Float32Array.from({ length: 2 * width }, (_, i) => i + 1);
        const dy = key === 'depthGate' ? tf.tensor1d(dyData) : tf.tensor2d(dyData, [2, width]);
        const g = tf.grad((x: tf.Tensor) => {
          const gates = splitArchVector(layout, x as tf.Tensor2D);
          return gates[sb.name]![key]!;
        })(v, dy);
        const expected = new Float32Array(2 * L);
        for (let b = 0; b < 2; b++) for (let k = 0; k < width; k++) expected[b * L + offset + k] = dyData[b * width + k]!;
        expectClose(g, expected, { name: `${sb.name}.${key}`, atol: 0 });
        tf.dispose([dy, g]);
      }
    }
    v.dispose();
  });

  it('hard gates threshold at 0.5 inclusive; straight-through passes the identity gradient', () => {
    const x = tf.tensor1d([0, 0.2, 0.4999, 0.5, 0.75, 1]);
    tf.tidy(() => {
      expectClose(hardGates(x), [0, 0, 0, 1, 1, 1], { atol: 0 });
    });
    const dy = tf.tensor1d([1, 2, 3, 4, 5, 6]);
    const grad = tf.grad((t: tf.Tensor) => hardStraightThrough(t))(x, dy);
    tf.tidy(() => {
      expectClose(hardStraightThrough(x), [0, 0, 0, 1, 1, 1], { atol: 0 });
    });
    expectClose(grad, [1, 2, 3, 4, 5, 6], { atol: 0 });
    const flat = tf.grad((t: tf.Tensor) => hardGates(t))(x, dy);
    expectClose(flat, [0, 0, 0, 0, 0, 0], { atol: 0 });
    flat.dispose();
    tf.dispose([x, dy, grad]);
  });

  it('expands a gate into contiguous groups, with a summed gradient per group', () => {
    const g = tf.tensor2d([1, 2, 3, 4, 5, 6], [2, 3]);
    const e = expandGate(g, 2);
    expectClose(e, [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6], { atol: 0, shape: [2, 6] });
    const dg = tf.tidy(() => tf.grad((t: tf.Tensor) => expandGate(t as tf.Tensor2D, 2))(g, tf.tensor2d([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [2, 6])));
    expectClose(dg, [1, 5, 9, 13, 17, 21], { atol: 0 });
    tf.dispose([g, e, dg]);
  });

  it('rejects vectors of the wrong length', () => {
    const v = tf.zeros([2, L + 1]);
    expect(() => checkArchVector(layout, v)).toThrow(ShapeError);
    expect(() => splitArchVector(layout, v as tf.Tensor2D)).toThrow(new RegExp(`expected \\[B, ${L}\\], found \\[2,${L + 1}\\]`));
    expect(() => hardArchitecture(layout, new Float32Array(L - 1))).toThrow(ShapeError);
    v.dispose();
  });

  it('does not leak tensors', async () => {
    const before = tf.memory().numTensors;
    const v = tf.tensor2d(rowValues(2, L), [2, L]);
    await expectNoTensorLeak(() => {
      disposeGates(splitArchVector(layout, v));
      tf.dispose(tf.tidy(() => tf.grad((x: tf.Tensor) => splitArchVector(layout, x as tf.Tensor2D)[layout.subBlocks[0]!.name]!.resnetGate!)(v, tf.ones([2, 4]))));
      tf.tidy(() => {
        splitArchVector(layout, v);
      });
      tf.dispose(tf.tidy(() => [hardGates(v), hardStraightThrough(v), tf.grad((t: tf.Tensor) => hardStraightThrough(t))(v, tf.onesLike(v))]));
    });
    v.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('hard architecture (host side)', () => {
  it('thresholds each gate and depth entry', () => {
    const row = new Float32Array(layout.vectorLength).fill(0.9);
    const g0 = layout.widthGates[0]!;
    row[g0.offset] = 0.1;
    row[layout.depthGates[0]!.vectorIndex] = 0.49;
    const h = hardArchitecture(layout, row);
    expect(h.width[0]![0]).toBe(false);
    expect(h.width[0]!.slice(1).every(Boolean)).toBe(true);
    expect(h.depth[0]).toBe(false);
    expect(h.depth.slice(1).every(Boolean)).toBe(true);
    const k = keptFraction(layout, row);
    expect(k.width).toBeCloseTo((layout.widthEntries - 1) / layout.widthEntries, 12);
    expect(k.depthKept).toBe(layout.depthEntries - 1);
  });
});
