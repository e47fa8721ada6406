import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, OrtModel, Rng, type HostTensor } from '@aptp/core';
import { describeBackends, expectClose, expectNoTensorLeak, gradCheck, useBackend } from '@aptp/core/testing';
import { parseUNetConfig } from '../config';
import { exportUNetToOnnx } from '../export/onnx';
import { macsModel } from '../macs';
import { createEagerUNet, type UNet2DConditionModel } from '../unet';
import { eagerTensorFactory, hostSource, randomUNetWeights, type TensorFactory } from '../weights';

/**
 * `addition_embed_type: "text"` (diffusers `TextTimeEmbedding` + `AttentionPooling`): checked against a float64
 * host implementation of the diffusers code, the time embedding becomes temb + aug, gradients against finite
 * differences, the ONNX export against eager, the MACs of the extra module, and the config errors.
 */
const PLAIN = {
  block_out_channels: [8, 16],
  down_block_types: ['CrossAttnDownBlock2D', 'DownBlock2D'],
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D'],
  attention_head_dim: 2,
  cross_attention_dim: 6,
  layers_per_block: 1,
  norm_num_groups: 4,
  in_channels: 3,
  out_channels: 3,
  use_linear_projection: true,
};
const TEXT = { ...PLAIN, addition_embed_type: 'text', addition_embed_type_num_heads: 3 };
const cfg = parseUNetConfig(TEXT, 'text/config.json');
const plainCfg = parseUNetConfig(PLAIN, 'plain/config.json');
const weights = randomUNetWeights(cfg, 21, 0.3);
const plainWeights = new Map([...weights].filter(([k]) => !k.startsWith('add_embedding.')));

const B = 2;
const S = 4;
const D = 6;
function inputs(): { sample: tf.Tensor; timestep: tf.Tensor; ehs: tf.Tensor } {
  const r = Rng.forKey(4, 'text-inputs');
  return {
    sample: tf.tensor(r.normal(B * 3 * 4 * 4), [B, 3, 4, 4]),
    timestep: tf.tensor1d([5, 730]),
    ehs: tf.tensor(r.normal(B * S * D), [B, S, D]),
  };
}

/** diffusers `TextTimeEmbedding.forward` in float64 on the host (weights in the diffusers layout). */
function hostTextTimeEmbedding(w: Map<string, HostTensor>, ehs: Float32Array, heads: number, T: number): Float64Array {
  const g = (k: string) => w.get(`add_embedding.${k}`)!.data as Float32Array;
  const layerNorm = (x: number[], gamma: Float32Array, beta: Float32Array) => {
    const m = x.reduce((a, v) => a + v, 0) / x.length;
    const v = x.reduce((a, y) => a + (y - m) ** 2, 0) / x.length;
    return x.map((y, i) => ((y - m) / Math.sqrt(v + 1e-5)) * gamma[i]! + beta[i]!);
  };
  const lin = (x: number[], k: string, out: number) => {
    const W = g(`${k}.weight`);
    const b = g(`${k}.bias`);
    return Array.from({ length: out }, (_, o) => x.reduce((a, v, i) => a + W[o * x.length + i]! * v, b[o]!));
  };
  const dh = D / heads;
  const out = new Float64Array(B * T);
  for (let b = 0; b < B; b++) {
    const x = Array.from({ length: S }, (_, s) => layerNorm(Array.from(ehs.subarray((b * S + s) * D, (b * S + s + 1) * D)), g('norm1.weight'), g('norm1.bias')));
    const pos = g('pool.positional_embedding');
    const cls = Array.from({ length: D }, (_, i) => x.reduce((a, t) => a + t[i]!, 0) / S + pos[i]!);
    const tokens = [cls, ...x];
    const q = lin(cls, 'pool.q_proj', D);
    const k = tokens.map((t) => lin(t, 'pool.k_proj', D));
    const v = tokens.map((t) => lin(t, 'pool.v_proj', D));
    const a = new Array<number>(D).fill(0);
    for (let h = 0; h < heads; h++) {
      const logits = k.map((kt) => {
        let s = 0;
        for (let j = 0; j < dh; j++) s += q[h * dh + j]! * Math.pow(dh, -0.25) * kt[h * dh + j]! * Math.pow(dh, -0.25);
        return s;
      });
      const mx = Math.max(...logits);
      const e = logits.map((l) => Math.exp(l - mx));
      const z = e.reduce((p, c) => p + c, 0);
      for (let j = 0; j < dh; j++) a[h * dh + j] = v.reduce((p, vt, t) => p + (e[t]! / z) * vt[h * dh + j]!, 0);
    }
    const aug = layerNorm(lin(a, 'proj', T), g('norm2.weight'), g('norm2.bias'));
    out.set(aug, b * T);
  }
  return out;
}

function captured(unet: UNet2DConditionModel<tf.Tensor>, names: string[]): Record<string, Float32Array> {
  const got: Record<string, Float32Array> = {};
  const { sample, timestep, ehs } = inputs();
  const out = unet.forward({ sample, timestep, encoderHiddenStates: ehs, capture: (n, v) => names.includes(n) && (got[n] = v.dataSync() as Float32Array) });
  got.out_sample = out.sample.dataSync() as Float32Array;
  tf.dispose([out.sample, ...Object.values(out.blocks), sample, timestep, ehs]);
  return got;
}

describe('addition_embed_type "text" (TextTimeEmbedding)', () => {
  describeBackends('forward', (backend) => {
    it('add_embedding = the float64 diffusers formula; temb = time embedding + add_embedding; the text moves every ResNet', () => {
      const unet = createEagerUNet(cfg, hostSource(weights));
      const plain = createEagerUNet(plainCfg, hostSource(plainWeights));
      try {
        const got = captured(unet, ['add_embedding', 'temb']);
        const ehs = Rng.forKey(4, 'text-inputs');
        ehs.normal(B * 3 * 4 * 4);
        const ref = hostTextTimeEmbedding(weights, ehs.normal(B * S * D), cfg.additionEmbedHeads, cfg.timeEmbedDim);
        expectClose(got.add_embedding!, ref, { name: `add_embedding on ${backend}` });
        const plainGot = captured(plain, ['temb']);
        expectClose(got.temb!, Float64Array.from(plainGot.temb!, (v, i) => v + got.add_embedding![i]!), { name: `temb on ${backend}`, rtol: 1e-6 });
        expect(Math.max(...got.out_sample!.map((v, i) => Math.abs(v - plainGot.out_sample![i]!)))).toBeGreaterThan(1e-3);
      } finally {
        unet.dispose();
        plain.dispose();
      }
    });

    it('leaves no tensors behind', async () => {
      const unet = createEagerUNet(cfg, hostSource(weights));
      await expectNoTensorLeak(() => void captured(unet, ['add_embedding']), { steps: 2, name: 'forward with add_embedding' });
      unet.dispose();
    });
  });

  it('gradients w.r.t. the text states and the pooling weights match finite differences (cpu)', async () => {
    await useBackend('cpu');
    const keys = ['add_embedding.pool.positional_embedding', 'add_embedding.pool.q_proj.weight', 'add_embedding.proj.bias'];
    const vars = new Map<string, tf.Variable>();
    const wrap = (t: tf.Tensor, k: string) => {
      if (!keys.includes(k)) return t;
      const v = tf.variable(t, true, `tte_${k}`);
      t.dispose();
      vars.set(k, v);
      return v;
    };
    const factory: TensorFactory<tf.Tensor> = {
      conv: (w, k) => wrap(eagerTensorFactory.conv(w, k), k),
      linear: (w, k) => wrap(eagerTensorFactory.linear(w, k), k),
      vector: (v, k) => wrap(eagerTensorFactory.vector(v, k), k),
    };
    const unet = createEagerUNet(cfg, hostSource(weights), { factory });
    expect(vars.get(keys[0]!)!.shape).toEqual([1, D]); // the diffusers [1, D] row keeps its shape
    const { sample, timestep, ehs } = inputs();
    const cot = tf.tensor(Rng.forKey(6, 'cot').normal(B * 3 * 4 * 4), [B, 3, 4, 4]);
    const loss = (c: tf.Tensor) => {
      const out = unet.forward({ sample, timestep, encoderHiddenStates: c });
      const l = tf.sum(tf.mul(out.sample, cot)) as tf.Scalar;
      tf.dispose(Object.values(out.blocks));
      return l;
    };
    gradCheck(loss, [ehs], { eps: 1e-2, rtol: 2e-2, atol: 2e-3, probes: 16, name: 'd loss / d text states' });
    const vs = keys.map((k) => vars.get(k)!);
    const { value, grads } = tf.variableGrads(() => loss(ehs), vs);
    value.dispose();
    for (const v of vs) {
      const g = grads[v.name]!.dataSync();
      expect(Math.max(...Array.from(g, Math.abs))).toBeGreaterThan(0);
      const base = v.dataSync().slice();
      for (let p = 0; p < 4; p++) {
        const i = Math.floor((p * base.length) / 4);
        const at = (d: number) => {
          const data = base.slice();
          data[i] = data[i]! + d;
          v.assign(tf.tensor(data, v.shape));
          return tf.tidy(() => loss(ehs).dataSync()[0]!);
        };
        const fd = (at(1e-2) - at(-1e-2)) / 2e-2;
        expect(Math.abs(fd - g[i]!)).toBeLessThanOrEqual(2e-3 + 2e-2 * Math.max(Math.abs(fd), Math.abs(g[i]!)));
      }
      v.assign(tf.tensor(base, v.shape));
    }
    tf.dispose([...Object.values(grads), sample, timestep, ehs, cot]);
    unet.dispose();
    vars.forEach((v) => v.dispose());
  });

  it('the ONNX export computes the same prediction as the eager model', async () => {
    await useBackend('cpu');
    const bytes = exportUNetToOnnx(cfg, hostSource(weights)).toBytes();
    const model = await OrtModel.load(bytes, { name: 'text.onnx', intraOpNumThreads: 1 });
    try {
      const { sample, timestep, ehs } = inputs();
      const res = await model.run(
        {
          sample: { data: sample.dataSync() as Float32Array, dims: sample.shape },
          timestep: { data: timestep.dataSync() as Float32Array, dims: timestep.shape },
          encoder_hidden_states: { data: ehs.dataSync() as Float32Array, dims: ehs.shape },
        },
        ['out_sample'],
      );
      tf.dispose([sample, timestep, ehs]);
      const unet = createEagerUNet(cfg, hostSource(weights));
      const eager = captured(unet, []);
      unet.dispose();
      expectClose(res.out_sample!.data as Float32Array, eager.out_sample!, { name: 'onnx out_sample with add_embedding', rtol: 2e-5 });
    } finally {
      await model.dispose();
    }
  });

  it('MACs: the fixed part gains exactly the add_embedding modules (S = 5 tokens, D = 6, 3 heads, T = 32)', () => {
    const input = { latentHeight: 4, latentWidth: 4, textTokens: 5 };
    const withText = macsModel(cfg, input);
    const plain = macsModel(plainCfg, input);
    // norm1 5·6; q 6·6+6; k, v 6·(6·6)+6 each; core 3·(2·6·2 + 6); proj 6·32+32; norm2 32
    const expected = 30 + 42 + 222 + 222 + 90 + 224 + 32;
    expect(withText.totalMacs - plain.totalMacs).toBe(expected);
    expect(withText.fullPrunableMacs).toBe(plain.fullPrunableMacs);
  });

  it('config errors name the field', () => {
    expect(() => parseUNetConfig({ ...PLAIN, addition_embed_type: 'image' }, 'c.json')).toThrow(/addition_embed_type/);
    expect(() => parseUNetConfig({ ...TEXT, addition_embed_type_num_heads: 4 }, 'c.json')).toThrow(ConfigError);
    expect(() => parseUNetConfig({ ...TEXT, addition_embed_type_num_heads: 4 }, 'c.json')).toThrow(/addition_embed_type_num_heads/);
    expect(() => createEagerUNet(cfg, hostSource(plainWeights))).toThrow(/add_embedding\.norm1\.weight/);
  });
});
