import * as tf from '@tensorflow/tfjs-core';
import { DDPMScheduler } from '@aptp/core';
import { describeBackends, expectClose, expectNoTensorLeak } from '@aptp/core/testing';
import { SyntheticWorld } from '@aptp/datasets';
import { HashedTextConditioner, createEagerUNet, hostSource, parseUNetConfig } from '@aptp/unet-gating';
import { createAdamW } from '../optim/config';
import { teacherBatch, teacherStep, updateEma, type TeacherStepContext } from './teacherStep';
import { createTrainableUNet, initUNetWeights } from './trainableUNet';
import { TINY_TEACHER_UNET } from './__fixtures__/tinyTeacher';

const cfg = parseUNetConfig(TINY_TEACHER_UNET, 'tiny');
const batchOptions = { seed: 5, batchSize: 2, captionDropout: 0.3, numTrainTimesteps: 1000 };

describe('initUNetWeights / createTrainableUNet', () => {
  const init = initUNetWeights(cfg, 1, { zeroOut: true });

  it('initialises like torch: norms 1/0, conv_out 0, others U(±1/√fan_in)', () => {
    expect(Array.from(init.get('conv_norm_out.weight')!.data as Float32Array)).toEqual(new Array(8).fill(1));
    expect(Array.from(init.get('up_blocks.0.attentions.0.transformer_blocks.0.norm3.bias')!.data as Float32Array)).toEqual(new Array(16).fill(0));
    expect(Array.from(init.get('conv_out.weight')!.data as Float32Array).every((v) => v === 0)).toBe(true);
    const w = init.get('down_blocks.1.resnets.0.conv1.weight')!; // [16, 8, 3, 3]: fan_in 72
    const bound = 1 / Math.sqrt(72);
    const data = Array.from(w.data as Float32Array);
    expect(Math.max(...data.map(Math.abs))).toBeLessThanOrEqual(bound);
    expect(Math.max(...data.map(Math.abs))).toBeGreaterThan(0.9 * bound);
    expect(Array.from(initUNetWeights(cfg, 1).get('conv_in.weight')!.data as Float32Array)).toEqual(Array.from(init.get('conv_in.weight')!.data as Float32Array));
  });

  it('diffusersWeights gives back exactly the diffusers tensors it was built from (transposes, GEGLU halves)', () => {
    const t = createTrainableUNet(cfg, init);
    try {
      expect(Object.keys(t.params)).toContain('down_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj.weight#1');
      expect(Object.values(t.params).every((v) => v.trainable)).toBe(true);
      const back = t.diffusersWeights();
      expect([...back.keys()].sort()).toEqual([...init.keys()].sort());
      for (const [k, v] of init) {
        expect(back.get(k)!.shape).toEqual(v.shape);
        expect(Array.from(back.get(k)!.data as Float32Array)).toEqual(Array.from(v.data as Float32Array));
      }
    } finally {
      t.dispose();
    }
  });
});

describe('teacherBatch', () => {
  const world = new SyntheticWorld({ seed: 0, imageSize: 16 });

  it('step k uses rows k·B … k·B+B−1, images in [−1, 1], per-row noise/timestep/dropout independent of the batch size', () => {
    const a = teacherBatch(world, batchOptions, 3);
    const b = teacherBatch(world, { ...batchOptions, batchSize: 1 }, 7); // row 7 = row 1 of step 3 at B = 2
    try {
      expect(a.rows).toEqual([6, 7]);
      expect(a.x0.shape).toEqual([2, 3, 16, 16]);
      const x = a.x0.dataSync();
      expect(Math.min(...x)).toBeGreaterThanOrEqual(-1);
      expect(Math.max(...x)).toBeLessThanOrEqual(1);
      expect(b.timesteps[0]).toBe(a.timesteps[1]);
      expect(b.prompts[0]).toBe(a.prompts[1]);
      expect(Array.from(b.noise.dataSync())).toEqual(Array.from(a.noise.dataSync().subarray(3 * 256)));
      // the image of row 7 as the world renders it
      const s = world.sample('train', 7);
      expect(b.x0.dataSync()[0]).toBeCloseTo(s.image.data[0]! / 127.5 - 1, 6);
    } finally {
      tf.dispose([a.x0, a.noise, b.x0, b.noise]);
    }
  });

  it('drops about captionDropout of the captions', () => {
    let empty = 0;
    const n = 400;
    for (let k = 0; k < n / 2; k++) {
      const bt = teacherBatch(world, batchOptions, k);
      empty += bt.prompts.filter((p) => p === '').length;
      tf.dispose([bt.x0, bt.noise]);
    }
    expect(empty / n).toBeGreaterThan(0.22);
    expect(empty / n).toBeLessThan(0.38);
  });
});

// Training steps run on wasm, the training backend (a tiny step takes ~16 s on tfjs-cpu; the kernels' cpu/wasm
// agreement is tested in @aptp/core and the UNet forward's in @aptp/unet-gating).
describeBackends('teacherStep', () => {
  function setup() {
    const t = createTrainableUNet(cfg, initUNetWeights(cfg, 2, { zeroOut: true }));
    const ema = Object.fromEntries(Object.entries(t.params).map(([k, v]) => [k, tf.variable(v.clone(), false)]));
    const optimizer = createAdamW([{ name: 'unet', lr: 3e-3, params: t.params }], { lrWarmupSteps: 0, lrScheduler: 'constant', maxGradNorm: 1, scaleLr: false });
    const ctx: TeacherStepContext = {
      unet: t.unet,
      params: t.params,
      ema,
      emaDecay: 0.9,
      optimizer,
      scheduler: new DDPMScheduler({ betaSchedule: 'squaredcos_cap_v2', predictionType: 'v_prediction', clipSample: false }),
      conditioner: new HashedTextConditioner({ dim: 8, sequenceLength: 8 }),
      snrGamma: 5,
      x0WeightedAs: 'epsilon' as const,
    };
    const dispose = () => {
      optimizer.dispose();
      tf.dispose(Object.values(ema));
      t.dispose();
    };
    return { t, ctx, dispose };
  }
  const world = new SyntheticWorld({ seed: 0, imageSize: 16 });

  it('keeps the number of live tensors flat across steps', async () => {
    const { ctx, dispose } = setup();
    let k = 0;
    await expectNoTensorLeak(() => void teacherStep(ctx, world, batchOptions, k++), { name: 'teacherStep', warmup: 1, steps: 3 });
    dispose();
  });

  it('learns: the loss on a fixed batch falls when training on it', () => {
    const { ctx, dispose } = setup();
    const fixed = { ...batchOptions, captionDropout: 0 };
    const losses: number[] = [];
    for (let i = 0; i < 12; i++) losses.push(teacherStep(ctx, world, fixed, 0).loss); // the same rows every time
    expect(losses.every(Number.isFinite)).toBe(true);
    expect(Math.min(...losses.slice(-3))).toBeLessThan(0.8 * losses[0]!);
    dispose();
  });

  it('the EMA follows θ̄ ← d·θ̄ + (1−d)·θ with d = min(decay, (1+k)/(10+k))', () => {
    const p = { w: tf.variable(tf.tensor1d([1, 2])) };
    const e = { w: tf.variable(tf.tensor1d([0, 0]), false) };
    expect(updateEma(e, p, 0.999, 0)).toBeCloseTo(0.1, 12);
    expectClose(e.w.dataSync(), Float32Array.from([0.9, 1.8]), { name: 'ema k=0' });
    expect(updateEma(e, p, 0.5, 100)).toBe(0.5);
    expectClose(e.w.dataSync(), Float32Array.from([0.95, 1.9]), { name: 'ema k=100' });
    tf.dispose([p.w, e.w]);
  });

  it('the trained weights load back as a plain diffusers UNet with the same output', () => {
    const { t, ctx, dispose } = setup();
    teacherStep(ctx, world, batchOptions, 0);
    const reloaded = createEagerUNet(cfg, hostSource(t.diffusersWeights()));
    const x = tf.tidy(() => tf.randomUniform([1, 3, 16, 16], -1, 1, 'float32', 3));
    const c = ctx.conditioner.encodeSync(['a red circle']);
    const a = tf.tidy(() => t.unet.forward({ sample: x, timestep: 500, encoderHiddenStates: c }).sample);
    const b = tf.tidy(() => reloaded.forward({ sample: x, timestep: 500, encoderHiddenStates: c }).sample);
    expect(Math.max(...a.dataSync().map(Math.abs))).toBeGreaterThan(0); // conv_out left zero after a step
    expectClose(b.dataSync(), a.dataSync(), { name: 'reloaded forward' });
    tf.dispose([x, c, a, b]);
    reloaded.dispose();
    dispose();
  });
}, ['wasm']);
