import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { Rng, writeSafetensors, type HostTensor } from '@aptp/core';
import { expectClose, useBackend, useTempDirs } from '@aptp/core/testing';
import { parseUNetConfig } from '../config';
import { exportUNetToOnnx } from '../export/onnx';
import { OrtUNetEngine } from '../engines/ort';
import { loadExpert } from '../experts';
import { architectureLayout } from '../gates/layout';
import { macsModel } from '../macs';
import { pruneUNetFolder } from '../prune';
import { createEagerUNet, loadUNet } from '../unet';
import { hostSource, randomUNetWeights } from '../weights';

/**
 * `resnet_time_scale_shift: "scale_shift"` (ADM's AdaGN; diffusers `ResnetBlock2D`): time_emb_proj has 2·C rows,
 * `[scale, shift] = chunk(time_emb_proj(silu(temb)), 2)` and `conv2(silu(norm2(h)·(1 + scale) + shift))`. No golden
 * tensors exist for it (the reference is SD 2.1, `default`), so: the formula on captured tensors, pruned = gated,
 * ORT = tfjs, and the MACs of the doubled projection.
 */
const JSON_CONFIG = {
  block_out_channels: [8, 16],
  down_block_types: ['CrossAttnDownBlock2DHalfGated', 'DownBlock2DHalfGated'],
  mid_block_type: 'UNetMidBlock2DCrossAttnWidthGated',
  up_block_types: ['UpBlock2DHalfGated', 'CrossAttnUpBlock2DHalfGated'],
  attention_head_dim: 2,
  cross_attention_dim: 6,
  layers_per_block: 2, // *HalfGated blocks put depth gates on ResNets that keep their width (as SD 2.1)
  norm_num_groups: 4,
  in_channels: 3,
  out_channels: 3,
  sample_size: 8,
  use_linear_projection: true,
  gated_ff: true,
  ff_gate_width: 4,
  resnet_time_scale_shift: 'scale_shift',
};
const cfg = parseUNetConfig(JSON_CONFIG);
const weights = randomUNetWeights(cfg, 3, 0.2);
const input = () => ({
  sample: tf.tensor4d(Rng.forKey(1, 'x').normal(2 * 3 * 8 * 8), [2, 3, 8, 8]),
  timestep: tf.tensor1d([10, 700], 'int32'),
  encoderHiddenStates: tf.tensor3d(Rng.forKey(1, 'ehs').normal(2 * 4 * 6), [2, 4, 6]),
});

describe('ResnetBlock2D with resnet_time_scale_shift: "scale_shift"', () => {
  const tempDir = useTempDirs('aptp-scale-shift-');
  beforeAll(async () => {
    await useBackend('cpu');
  });

  it('time_emb_proj has 2·C rows and the block computes conv2(silu(norm2(h)·(1 + scale) + shift))', () => {
    const name = 'down_blocks.1.resnets.0'; // 8 → 16 channels
    expect(weights.get(`${name}.time_emb_proj.weight`)!.shape).toEqual([32, cfg.timeEmbedDim]);
    const unet = createEagerUNet(cfg, hostSource(weights));
    try {
      tf.tidy(() => {
        const seen = new Map<string, tf.Tensor>();
        unet.forward({ ...input(), capture: (key, value) => seen.set(key, tf.keep(value.clone())) });
        const n2 = seen.get(`${name}.norm2`)! as tf.Tensor4D; // internal layout, [B, H, W, C] on eager
        const t = seen.get(`${name}.time_emb_proj`)! as tf.Tensor2D; // [B, 32]
        const scale = tf.reshape(tf.slice(t, [0, 0], [-1, 16]), [2, 1, 1, 16]);
        const shift = tf.reshape(tf.slice(t, [0, 16], [-1, 16]), [2, 1, 1, 16]);
        const w = weights.get(`${name}.conv2.weight`)!; // [O, I, 3, 3]
        const kernel = tf.transpose(tf.tensor4d(w.data as Float32Array, w.shape as [number, number, number, number]), [2, 3, 1, 0]) as tf.Tensor4D;
        const bias = tf.tensor1d(weights.get(`${name}.conv2.bias`)!.data as Float32Array);
        const modulated = tf.add(tf.mul(n2, tf.add(1, scale)), shift);
        const expected = tf.add(tf.conv2d(tf.mul(modulated, tf.sigmoid(modulated)) as tf.Tensor4D, kernel, 1, 'same'), bias);
        expectClose(seen.get(`${name}.conv2`)!, expected.dataSync() as Float32Array, { name: 'conv2 output', shape: expected.shape });
        for (const v of seen.values()) v.dispose();
      });
    } finally {
      unet.dispose();
    }
  });

  it('a physically pruned expert equals the full model hard-gated with consistent placement; ORT equals tfjs', async () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(JSON_CONFIG));
    writeSafetensors(path.join(dir, 'diffusion_pytorch_model.safetensors'), Object.fromEntries(weights) as Record<string, HostTensor>);
    const layout = architectureLayout(cfg);
    // every other ResNet group and FF unit off, one head of each attention off, depth gates on
    const arch = new Float32Array(layout.vectorLength).fill(1);
    for (const g of layout.widthGates) for (let u = 0; u < g.width; u++) if (u % 2 === 1) arch[g.offset + u] = 0;
    const out = tempDir();
    pruneUNetFolder(dir, arch, out);
    expect(JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')).resnet_time_scale_shift).toBe('scale_shift');
    const full = await loadUNet(dir);
    const expert = await loadExpert(out);
    try {
      const x = input();
      const gated = tf.tidy(() => full.forward({ ...x, gates: tf.tensor2d(arch, [1, layout.vectorLength]), placement: 'consistent' }).sample);
      const pruned = tf.tidy(() => expert.forward(x).sample);
      expectClose(pruned, gated.dataSync() as Float32Array, { name: 'pruned vs gated', shape: gated.shape });
      const ungated = tf.tidy(() => full.forward(x).sample);
      expect(tf.max(tf.abs(tf.sub(ungated, gated))).dataSync()[0]).toBeGreaterThan(1e-3); // the gates did cut something

      const ort = await OrtUNetEngine.fromExport(exportUNetToOnnx(cfg, hostSource(weights)));
      try {
        const host = (t: tf.Tensor) => ({ data: t.dataSync() as Float32Array, dims: t.shape });
        const r = await ort.predict({ sample: host(x.sample), timestep: [10, 700], encoderHiddenStates: host(x.encoderHiddenStates) });
        expectClose(r.data, ungated.dataSync() as Float32Array, { name: 'ORT vs tfjs' });
      } finally {
        await ort.dispose();
      }
      tf.dispose([x.sample, x.timestep, x.encoderHiddenStates, gated, pruned, ungated]);
    } finally {
      full.dispose();
      expert.dispose();
    }
  });

  it('MACs: time_emb_proj counts 2·C outputs, everything else as default', () => {
    const plain = parseUNetConfig({ ...JSON_CONFIG, resnet_time_scale_shift: 'default' });
    const input = { latentHeight: 8, latentWidth: 8, textTokens: 4 };
    const a = macsModel(cfg, input);
    const b = macsModel(plain, input);
    let extra = 0;
    a.subBlocks.forEach((sb, i) => {
      const other = b.subBlocks[i]!;
      if (sb.kind !== 'resnet') return expect(sb.totalMacs).toBe(other.totalMacs);
      const c = sb.moduleMacs.time_emb_proj! - other.moduleMacs.time_emb_proj!;
      const outChannels = other.moduleMacs.time_emb_proj! / (cfg.timeEmbedDim + 1); // 1·T·C + C
      expect(c).toBe(outChannels * (cfg.timeEmbedDim + 1));
      expect(sb.totalMacs - other.totalMacs).toBe(c);
      extra += c;
    });
    expect(a.totalMacs - b.totalMacs).toBe(extra);
    expect(extra).toBeGreaterThan(0);
  });
});
