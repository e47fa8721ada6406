import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, Rng } from '@aptp/core';
import { expectNoTensorLeak, useBackend } from '@aptp/core/testing';
import { gumbelOptions, gumbelSigmoid, parseRouterConfig } from '@aptp/router';
import { aptpLayout, currentMacsOf, macsModel, parseUNetConfig } from '@aptp/unet-gating';
import { macsMatchedArchitecture } from './macsMatch';
import { defaultDepthOrder } from './prune';
import { TINY_TEACHER_UNET } from '../steps/__fixtures__/tinyTeacher';

/** The tiny teacher fixture with layers_per_block 2, so every half-gated depth gate can skip its block. */
const UNET = parseUNetConfig({ ...TINY_TEACHER_UNET, layers_per_block: 2 });

describe('macsMatchedArchitecture: the single architecture at a requested MACs ratio', () => {
  const layout = aptpLayout(UNET);
  const macs = macsModel(UNET, { latentHeight: 16, latentWidth: 16, textTokens: 6 });
  const options = gumbelOptions(parseRouterConfig({ inputDim: 8, numCodes: 1, depthOrder: defaultDepthOrder(layout.depthEntries) }));
  const ratioOfGates = (g: tf.Tensor2D): number => currentMacsOf(macs, Array.from(g.dataSync(), (x) => (x >= 0.5 ? 1 : 0))).totalMacs / macs.totalMacs;
  let logits: tf.Tensor2D;
  beforeAll(async () => {
    await useBackend('wasm');
    logits = tf.tensor2d(Rng.forKey(11, 'macs-match').normal(layout.vectorLength, 0, 2), [1, layout.vectorLength]);
  });
  afterAll(() => logits.dispose());

  const ratioAt = (offset: number): number => {
    const g = tf.tidy(() => gumbelSigmoid(logits, tf.fill([1, layout.vectorLength], offset) as tf.Tensor2D, layout, options));
    const r = ratioOfGates(g);
    g.dispose();
    return r;
  };

  it('MACs are non-decreasing in the offset (what the bisection relies on)', () => {
    expect(layout.depthEntries).toBeGreaterThan(0);
    const grid = Array.from({ length: 161 }, (_, i) => -40 + i * 0.5);
    const ratios = grid.map(ratioAt);
    for (let i = 1; i < ratios.length; i++) expect(ratios[i]!).toBeGreaterThanOrEqual(ratios[i - 1]!);
    expect(ratios[0]!).toBeLessThan(0.5);
    expect(ratios[ratios.length - 1]!).toBeCloseTo(1, 12);
  });

  it.each([0.45, 0.6, 0.75, 0.9])('hits target %p as closely as any offset on a fine grid, and reports the gates it chose', (target) => {
    const m = macsMatchedArchitecture(logits, layout, options, macs, target);
    expect(m.gates.shape).toEqual([1, layout.vectorLength]);
    expect(ratioOfGates(m.gates)).toBeCloseTo(m.macsRatio, 12);
    expect(ratioAt(m.offset)).toBeCloseTo(m.macsRatio, 12);
    const best = Math.min(...Array.from({ length: 801 }, (_, i) => Math.abs(ratioAt(-40 + i * 0.1) - target)));
    expect(Math.abs(m.macsRatio - target)).toBeLessThanOrEqual(best + 1e-12);
    m.gates.dispose();
  });

  it('keeps no tensor but the returned gates', async () => {
    await expectNoTensorLeak(() => macsMatchedArchitecture(logits, layout, options, macs, 0.6).gates.dispose());
  });

  it('out-of-range targets are config errors naming the field; an unreachable one gives the nearest end', () => {
    expect(() => macsMatchedArchitecture(logits, layout, options, macs, 0)).toThrow(ConfigError);
    expect(() => macsMatchedArchitecture(logits, layout, options, macs, 1.5)).toThrow(/singleArchMacsRatio/);
    const low = macsMatchedArchitecture(logits, layout, options, macs, 1e-6);
    expect(low.offset).toBe(-40);
    expect(low.macsRatio).toBeCloseTo(ratioAt(-40), 12);
    low.gates.dispose();
  });
});
