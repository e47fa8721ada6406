import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { InputError, Rng, ShapeError, f16ToF32, f32ToF16, writeSafetensors, type HostTensor } from '@aptp/core';
import { describeBackends, expectClose, expectNoTensorLeak, gradCheck, useBackend, useTempDirs } from '@aptp/core/testing';
import { parseUNetConfig } from './config';
import { aptpLayout } from './gates/layout';
import { createEagerUNet, loadUNet, type UNet2DConditionModel } from './unet';
import { eagerTensorFactory, hostSource, randomUNetWeights, type TensorFactory } from './weights';

/** A tiny random UNet with both block kinds, conv projections and a channel change (fast on cpu). */
const TINY = {
  block_out_channels: [8, 16],
  down_block_types: ['CrossAttnDownBlock2D', 'DownBlock2D'],
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D'],
  attention_head_dim: 2,
  cross_attention_dim: 6,
  layers_per_block: 1,
  norm_num_groups: 4,
  in_channels: 3,
  out_channels: 2,
  use_linear_projection: false,
};
const cfg = parseUNetConfig(TINY, 'tiny/config.json');

function inputs(batch = 2): { sample: tf.Tensor; timestep: tf.Tensor; ehs: tf.Tensor } {
  const r = Rng.forKey(3, 'inputs');
  return {
    sample: tf.tensor(r.normal(batch * 3 * 4 * 4), [batch, 3, 4, 4]),
    timestep: tf.tensor1d([17, 640].slice(0, batch)),
    ehs: tf.tensor(r.normal(batch * 3 * 6), [batch, 3, 6]),
  };
}

const tmpDir = useTempDirs('unet-test-');

/** Factory that makes the named weights trainable variables (so their gradient can be taken). */
function variablesFor(keys: string[], made: Map<string, tf.Variable>): TensorFactory<tf.Tensor> {
  const wrap = (t: tf.Tensor, k: string) => {
    if (!keys.includes(k)) return t;
    const v = tf.variable(t, true, `w_${made.size}_${k}`);
    t.dispose();
    made.set(k, v);
    return v;
  };
  return {
    conv: (w, k) => wrap(eagerTensorFactory.conv(w, k), k),
    linear: (w, k) => wrap(eagerTensorFactory.linear(w, k), k),
    vector: (v, k) => wrap(eagerTensorFactory.vector(v, k), k),
  };
}

const WEIGHT_KEYS = ['down_blocks.0.resnets.0.conv1.weight', 'up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight'];

/** Loss, gradient w.r.t. the sample and the two variables, on the current backend. */
function lossAndGrads(unet: UNet2DConditionModel<tf.Tensor>, vars: Map<string, tf.Variable>, cot: tf.Tensor): { loss: number; grads: Float32Array[] } {
  const { sample, timestep, ehs } = inputs();
  const f = (s: tf.Tensor) => {
    const out = unet.forward({ sample: s, timestep, encoderHiddenStates: ehs });
    const l = tf.add(tf.sum(tf.mul(out.sample, cot)), tf.mul(tf.sum(tf.square(out.blocks.mid!)), 0.01)) as tf.Scalar;
    tf.dispose(Object.values(out.blocks).filter((b) => b !== out.blocks.mid));
    return l;
  };
  const vs = WEIGHT_KEYS.map((k) => vars.get(k)!);
  const { value, grads } = tf.variableGrads(() => f(sample), vs);
  const gs = tf.grad(f)(sample);
  const res = { loss: value.dataSync()[0]!, grads: [gs.dataSync() as Float32Array, ...vs.map((v) => grads[v.name]!.dataSync() as Float32Array)] };
  tf.dispose([value, gs, ...Object.values(grads), sample, timestep, ehs]);
  return res;
}

describe('UNet gradients on a tiny random config', () => {
  const weights = randomUNetWeights(cfg, 11, 0.2);
  const cotData = Rng.forKey(5, 'cot').normal(2 * 2 * 4 * 4);
  let cpuGrads: Float32Array[] = [];

  it('finite differences w.r.t. the input and two weights (cpu)', async () => {
    await useBackend('cpu');
    const vars = new Map<string, tf.Variable>();
    const unet = createEagerUNet(cfg, hostSource(weights), { factory: variablesFor(WEIGHT_KEYS, vars) });
    const cot = tf.tensor(cotData, [2, 2, 4, 4]);
    const { sample, timestep, ehs } = inputs();
    const loss = (s: tf.Tensor) => {
      const out = unet.forward({ sample: s, timestep, encoderHiddenStates: ehs });
      return tf.add(tf.sum(tf.mul(out.sample, cot)), tf.mul(tf.sum(tf.square(out.blocks.mid!)), 0.01)) as tf.Scalar;
    };
    gradCheck(loss, [sample], { eps: 1e-2, rtol: 2e-2, atol: 2e-3, probes: 16, name: 'd loss / d sample' });
    // weights: perturb the variable in place, compare with its analytic gradient
    const res = lossAndGrads(unet, vars, cot);
    cpuGrads = res.grads;
    WEIGHT_KEYS.forEach((k, wi) => {
      const v = vars.get(k)!;
      const base = v.dataSync().slice();
      const g = res.grads[wi + 1]!;
      for (let p = 0; p < 8; p++) {
        const i = Math.floor((p * base.length) / 8) + 1;
        const at = (d: number) => {
          const data = base.slice();
          data[i] = data[i]! + d;
          v.assign(tf.tensor(data, v.shape));
          return tf.tidy(() => loss(sample).dataSync()[0]!);
        };
        const fd = (at(1e-2) - at(-1e-2)) / 2e-2;
        expect(Math.abs(fd - g[i]!)).toBeLessThanOrEqual(2e-3 + 2e-2 * Math.max(Math.abs(fd), Math.abs(g[i]!)));
      }
      v.assign(tf.tensor(base, v.shape));
    });
    tf.dispose([cot, sample, timestep, ehs]);
    unet.dispose();
    vars.forEach((v) => v.dispose());
  });

  describeBackends('forward + backward', (backend) => {
    it('gradients run and agree with the cpu gradients; no leak across steps', async () => {
      const vars = new Map<string, tf.Variable>();
      const unet = createEagerUNet(cfg, hostSource(weights), { factory: variablesFor(WEIGHT_KEYS, vars) });
      const cot = tf.tensor(cotData, [2, 2, 4, 4]);
      const res = lossAndGrads(unet, vars, cot);
      res.grads.forEach((g, i) => expectClose(g, cpuGrads[i]!, { name: `grad ${i} on ${backend}`, rtol: 1e-4 }));
      await expectNoTensorLeak(() => void lossAndGrads(unet, vars, cot), { steps: 2, name: 'forward+backward' });
      tf.dispose(cot);
      unet.dispose();
      vars.forEach((v) => v.dispose());
    });
  });
});

describe('loadUNet folder handling', () => {
  const weights = randomUNetWeights(cfg, 12);
  const writeFolder = (tensors: Map<string, HostTensor>, dtype: 'F32' | 'F16' = 'F32', config: object = TINY): string => {
    const dir = tmpDir();
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ _class_name: 'UNet2DConditionModel', ...config }));
    writeSafetensors(path.join(dir, 'diffusion_pytorch_model.safetensors'), Object.fromEntries(tensors), { dtype });
    return dir;
  };
  beforeAll(async () => useBackend('cpu'));

  it('loads fp32 and fp16 files; fp16 equals the model built from fp16-rounded weights', async () => {
    const { sample, timestep, ehs } = inputs();
    const rounded = new Map([...weights].map(([k, t]) => [k, { ...t, data: (t.data as Float32Array).map((v) => f16ToF32(f32ToF16(v))) }]));
    const a = await loadUNet(writeFolder(weights));
    const b = await loadUNet(writeFolder(weights, 'F16'));
    const c = createEagerUNet(cfg, hostSource(rounded));
    const ref = createEagerUNet(cfg, hostSource(weights));
    const [oa, ob, oc, or] = [a, b, c, ref].map((u) => u.forward({ sample, timestep, encoderHiddenStates: ehs }).sample);
    expect(Array.from(oa!.dataSync())).toEqual(Array.from(or!.dataSync()));
    expect(Array.from(ob!.dataSync())).toEqual(Array.from(oc!.dataSync()));
    [a, b, c, ref].forEach((u) => u.dispose());
    a.dispose(); // idempotent
    tf.dispose([sample, timestep, ehs]);
  });

  it('a missing weight names the tensor; a mis-shaped one the expected and found shapes; extra tensors are rejected', async () => {
    const missing = new Map(weights);
    missing.delete('down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight');
    const dir = writeFolder(missing);
    await expect(loadUNet(dir)).rejects.toThrow(InputError);
    await expect(loadUNet(dir)).rejects.toThrow(/diffusion_pytorch_model\.safetensors: down_blocks\.0\.attentions\.0\.transformer_blocks\.0\.attn2\.to_k\.weight: missing weight: expected \[8,6\]/);

    const bad = new Map(weights);
    bad.set('up_blocks.0.resnets.1.conv1.weight', { dtype: 'float32', shape: [16, 9, 3, 3], data: new Float32Array(16 * 9 * 9) });
    const e = await loadUNet(writeFolder(bad)).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ShapeError);
    expect(String((e as Error).message)).toMatch(/up_blocks\.0\.resnets\.1\.conv1\.weight: wrong shape: expected \[16,24,\*,\*\], found \[16,9,3,3\]/);

    const extra = new Map(weights);
    extra.set('down_blocks.0.resnets.7.norm1.weight', { dtype: 'float32', shape: [8], data: new Float32Array(8) });
    await expect(loadUNet(writeFolder(extra))).rejects.toThrow(/down_blocks\.0\.resnets\.7\.norm1\.weight: unexpected weights/);

    const empty = tmpDir();
    await expect(loadUNet(empty)).rejects.toThrow(/config\.json.*expected .*\{config\.json, diffusion_pytorch_model\.safetensors\}/);
    expect(tf.memory().numTensors).toBeLessThan(1000);
  });

  it('a pruned expert reads its widths from the weights and treats absent sub-blocks as identities', () => {
    // keep 2 of 4 groups in one ResNet, 1 of 2 heads in one attention, half of one feed-forward; drop one ResNet
    const w = new Map(weights);
    const rows = (k: string, keep: number[]) => {
      const t = w.get(k)!;
      const per = t.data.length / t.shape[0]!;
      const data = new Float32Array(keep.length * per);
      keep.forEach((r, i) => data.set((t.data as Float32Array).subarray(r * per, (r + 1) * per), i * per));
      w.set(k, { dtype: 'float32', shape: [keep.length, ...t.shape.slice(1)], data });
    };
    const cols = (k: string, keep: number[]) => {
      const t = w.get(k)!;
      const [o, i] = t.shape as [number, number];
      const inner = t.data.length / (o * i);
      const data = new Float32Array(o * keep.length * inner);
      for (let a = 0; a < o; a++) keep.forEach((c, j) => data.set((t.data as Float32Array).subarray((a * i + c) * inner, (a * i + c + 1) * inner), (a * keep.length + j) * inner));
      w.set(k, { dtype: 'float32', shape: [o, keep.length, ...t.shape.slice(2)], data });
    };
    const r = 'down_blocks.1.resnets.0';
    const keepCh = [0, 1, 2, 3, 12, 13, 14, 15]; // groups 0 and 3 of 4 (4 channels each)
    for (const k of [`${r}.conv1.weight`, `${r}.conv1.bias`, `${r}.time_emb_proj.weight`, `${r}.time_emb_proj.bias`, `${r}.norm2.weight`, `${r}.norm2.bias`]) rows(k, keepCh);
    cols(`${r}.conv2.weight`, keepCh);
    const a = 'up_blocks.1.attentions.0.transformer_blocks.0';
    for (const k of ['to_q', 'to_k', 'to_v']) rows(`${a}.attn1.${k}.weight`, [4, 5, 6, 7]);
    cols(`${a}.attn1.to_out.0.weight`, [4, 5, 6, 7]);
    const units = Array.from({ length: 16 }, (_, u) => u);
    rows(`${a}.ff.net.0.proj.weight`, [...units, ...units.map((u) => 32 + u)]);
    rows(`${a}.ff.net.0.proj.bias`, [...units, ...units.map((u) => 32 + u)]);
    cols(`${a}.ff.net.2.weight`, units);
    for (const k of [...w.keys()]) if (k.startsWith('up_blocks.0.resnets.1.')) w.delete(k);
    const unet = createEagerUNet(cfg, hostSource(w), { pruned: true });
    const { sample, timestep, ehs } = inputs();
    const out = unet.forward({ sample, timestep, encoderHiddenStates: ehs });
    expect(out.sample.shape).toEqual([2, 2, 4, 4]);
    expect(Number.isFinite(tf.sum(tf.abs(out.sample)).dataSync()[0])).toBe(true);
    // the same folder without `pruned` is rejected, naming the first deviating tensor
    expect(() => createEagerUNet(cfg, hostSource(w))).toThrow(/down_blocks\.1\.resnets\.0\.conv1\.weight: wrong shape: expected \[16,8,\*,\*\], found \[8,8,3,3\]/);
    tf.dispose([sample, timestep, ehs, out.sample, ...Object.values(out.blocks)]);
    unet.dispose();
  });
});

describeBackends('forward with blockOutputs: false', () => {
  const weights = randomUNetWeights(cfg, 12, 0.2);

  it('returns no block outputs, the bit-identical sample, and leaks nothing', async () => {
    const unet = createEagerUNet(cfg, hostSource(weights));
    const { sample, timestep, ehs } = inputs();
    const full = unet.forward({ sample, timestep, encoderHiddenStates: ehs });
    expect(Object.keys(full.blocks).sort()).toEqual(['down0', 'down1', 'mid', 'up0', 'up1']);
    const before = tf.memory().numTensors;
    const lean = unet.forward({ sample, timestep, encoderHiddenStates: ehs, blockOutputs: false });
    expect(lean.blocks).toEqual({});
    expect(tf.memory().numTensors - before).toBe(1); // the sample only
    expect(lean.sample.shape).toEqual(full.sample.shape);
    expect(Array.from(lean.sample.dataSync())).toEqual(Array.from(full.sample.dataSync()));
    const explicit = unet.forward({ sample, timestep, encoderHiddenStates: ehs, blockOutputs: true });
    expect(Object.keys(explicit.blocks)).toHaveLength(5);
    tf.dispose([full.sample, ...Object.values(full.blocks), lean.sample, explicit.sample, ...Object.values(explicit.blocks)]);
    await expectNoTensorLeak(() => {
      unet.forward({ sample, timestep, encoderHiddenStates: ehs, blockOutputs: false }).sample.dispose();
    }, { name: 'forward blockOutputs false' });
    tf.dispose([sample, timestep, ehs]);
    unet.dispose();
  });
});

describe('depth gates need a ResNet that keeps its shape', () => {
  beforeAll(() => useBackend('cpu'));

  it('a gated forward through a channel-changing depth-gated ResNet is a ShapeError naming the sub-block', () => {
    // layers_per_block 1: the last (only) ResNet of down_blocks.1 changes 8 → 16 channels and gets a depth gate
    const layout = aptpLayout(cfg);
    const owner = layout.subBlocks.find((sb) => sb.depthIndex !== null && sb.name === 'down_blocks.1.resnets.0');
    expect(owner).toBeDefined();
    const unet = createEagerUNet(cfg, hostSource(randomUNetWeights(cfg, 1)));
    const { sample, timestep, ehs } = inputs();
    const gates = tf.ones([2, layout.vectorLength]);
    try {
      expect(() => unet.forward({ sample, timestep, encoderHiddenStates: ehs, gates })).toThrow(ShapeError);
      expect(() => unet.forward({ sample, timestep, encoderHiddenStates: ehs, gates })).toThrow(/down_blocks\.1\.resnets\.0 carries a depth gate but changes channels \(8 → 16\)/);
    } finally {
      tf.dispose([sample, timestep, ehs, gates]);
      unet.dispose();
    }
  });
});
