import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ConfigError, InputError, SafetensorsReader, ShapeError, readSafetensors, type HostTensor } from '@aptp/core';
import { describeGolden, readGoldenJson, readGoldenTensors } from '@aptp/core/testing';
import { readUNetConfig } from './config';
import { architectureLayout } from './gates/layout';
import { moduleCounts, pruneTensor, pruneUNetFolder, pruneWeights, prunedArchitecture, readPrunedUNet, sliceAxis } from './prune';

interface GoldenPrunedStructure {
  sub_blocks: Array<Record<string, number | boolean | string>>;
  parameters_full: number;
  parameters_pruned: number;
  state_dict: Record<string, number[]>;
  removed_tensors: string[];
}

function expectSameTensors(ours: ReadonlyMap<string, HostTensor>, ref: ReadonlyMap<string, HostTensor>): void {
  expect([...ours.keys()].sort()).toEqual([...ref.keys()].sort());
  for (const [k, r] of ref) {
    const o = ours.get(k)!;
    expect({ k, shape: o.shape }).toEqual({ k, shape: r.shape });
    const a = o.data as Float32Array;
    const b = r.data as Float32Array;
    for (let i = 0; i < b.length; i++) {
      if (a[i] !== b[i]) throw new Error(`${k}[${i}]: ${a[i]} != ${b[i]} (pruned weights are pure slices: exact)`);
    }
  }
}

describeGolden('aptp', 'physical pruning vs the reference (pruned/)', (dir) => {
  const cfg = readUNetConfig(path.join(dir, 'config.json'));
  const layout = architectureLayout(cfg);
  const io = readGoldenTensors(path.join(dir, 'pruned', 'io.safetensors'));
  const arch = io.get('arch_vector')!.data as Float32Array;
  const golden = readGoldenJson<GoldenPrunedStructure>(path.join(dir, 'pruned', 'pruned_structure.json'));
  const base = readGoldenTensors(path.join(dir, 'diffusion_pytorch_model.safetensors'));
  const ref = readGoldenTensors(path.join(dir, 'pruned', 'diffusion_pytorch_model.safetensors'));
  const plan = prunedArchitecture(layout, arch);

  it('plans every sub-block as the reference (kept channels, heads, units, dropped blocks)', () => {
    expect(plan.subBlocks.length).toBe(golden.sub_blocks.length);
    golden.sub_blocks.forEach((g, i) => {
      const sb = plan.subBlocks[i]!;
      expect(sb.name).toBe(g.name);
      expect(sb.dropped).toBe(g.dropped);
      if (g.dropped) return;
      if (sb.kind === 'resnet') {
        expect({
          in_channels: sb.inChannels,
          conv1_out_channels: sb.keptChannels.length,
          norm2_groups: sb.keptGroups.length,
          norm2_channels: sb.keptChannels.length,
          conv2_in_channels: sb.keptChannels.length,
          out_channels: sb.outChannels,
          has_conv_shortcut: sb.hasConvShortcut,
        }).toEqual(Object.fromEntries(Object.entries(g).filter(([k]) => !['name', 'kind', 'dropped'].includes(k))));
      } else {
        expect({
          channels: sb.channels,
          attn1_heads: sb.attn1Heads.length,
          attn1_inner_dim: sb.attn1Heads.length * sb.headDim,
          attn2_heads: sb.attn2Heads.length,
          attn2_inner_dim: sb.attn2Heads.length * sb.headDim,
          // the reference reports the GEGLU projection's output features (value + gate halves)
          ff_inner_units: 2 * sb.ffUnits.length,
          ff_proj_out_features: 2 * sb.ffUnits.length,
        }).toEqual(Object.fromEntries(Object.entries(g).filter(([k]) => !['name', 'kind', 'dropped'].includes(k))));
      }
    });
  });

  it('slices the pretrained weights exactly like the reference, tensor by tensor', () => {
    const ours = pruneWeights(plan, base);
    expectSameTensors(ours, ref);
    const shapes = Object.fromEntries([...ours].map(([k, t]) => [k, t.shape]));
    expect(shapes).toEqual(golden.state_dict);
    expect([...base.keys()].filter((k) => !ours.has(k)).sort()).toEqual([...golden.removed_tensors].sort());
    expect([...ours.values()].reduce((a, t) => a + t.data.length, 0)).toBe(golden.parameters_pruned);
  });

  it('writes an expert folder that reloads to the same plan and weights', () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'aptp-prune-'));
    try {
      const out = path.join(tmp, 'expert');
      const progress: number[] = [];
      const res = pruneUNetFolder(dir, arch, out, { onProgress: (done) => progress.push(done) });
      expect(res.parametersFull).toBe(golden.parameters_full);
      expect(res.parametersPruned).toBe(golden.parameters_pruned);
      expect(res.removedTensors).toEqual([...golden.removed_tensors].sort());
      expect(progress.length).toBe(base.size);
      expect(fs.readdirSync(out).sort()).toEqual(['arch_vector.safetensors', 'config.json', 'diffusion_pytorch_model.safetensors']);
      expectSameTensors(readSafetensors(path.join(out, 'diffusion_pytorch_model.safetensors')), ref);

      const back = readPrunedUNet(out);
      expect(back.plan.subBlocks).toEqual(plan.subBlocks);
      expect(Array.from(back.plan.archVector)).toEqual(Array.from(arch));
      expect(back.entry.parameters).toBe(golden.parameters_pruned);
      expect(back.config.downBlockGating.every((g) => g === 'none')).toBe(true);
      expect(back.config.gatedFf).toBe(false);
      expect(architectureLayout(back.baseConfig)).toEqual(layout);
      expect(back.entry.modules['down_blocks.0.resnets.0']).toEqual({ conv1_out_channels: 4, norm2_groups: 2 });
      expect(back.entry.modules['down_blocks.1.attentions.1']).toEqual({ dropped: true });

      // fp16 storage
      pruneUNetFolder(dir, arch, path.join(tmp, 'half'), { dtype: 'F16' });
      const half = new SafetensorsReader(path.join(tmp, 'half', 'diffusion_pytorch_model.safetensors'));
      try {
        expect(half.keys().sort()).toEqual([...ref.keys()].sort());
        expect(new Set(half.keys().map((k) => half.info(k).dtype))).toEqual(new Set(['F16']));
        const w = half.read('down_blocks.0.resnets.0.conv1.weight').data as Float32Array;
        const r = ref.get('down_blocks.0.resnets.0.conv1.weight')!.data as Float32Array;
        r.forEach((v, i) => expect(Math.abs(w[i]! - v)).toBeLessThanOrEqual(Math.abs(v) * 2 ** -11 + 2 ** -24));
      } finally {
        half.close();
      }

      // a tampered count is caught
      const cfgFile = path.join(out, 'config.json');
      const json = JSON.parse(fs.readFileSync(cfgFile, 'utf8'));
      json._aptp_pruned.modules['down_blocks.0.resnets.0'].norm2_groups = 3;
      fs.writeFileSync(cfgFile, JSON.stringify(json));
      expect(() => readPrunedUNet(out)).toThrow(ConfigError);
      expect(() => readPrunedUNet(out)).toThrow(/_aptp_pruned\.modules\.down_blocks\.0\.resnets\.0/);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('refuses to prune already-pruned tensors and architectures that empty a kept gate', () => {
    const key = 'down_blocks.0.resnets.0.conv1.weight';
    expect(() => pruneTensor(plan, key, ref.get(key)!)).toThrow(ShapeError);
    const bad = Float32Array.from(arch);
    const g = layout.widthGates[0]!;
    bad.fill(0, g.offset, g.end);
    expect(() => prunedArchitecture(layout, bad)).toThrow(InputError);
    // the same gate emptied inside a dropped sub-block is fine
    const sb = layout.subBlocks.find((s) => s.depthIndex !== null)!;
    const inDropped = Float32Array.from(arch);
    inDropped[sb.depthVectorIndex!] = 0;
    const wg = layout.widthGates[sb.gates[0]!]!;
    inDropped.fill(0, wg.offset, wg.end);
    expect(prunedArchitecture(layout, inDropped).subBlocks[sb.index]!.dropped).toBe(true);
  });

  it('keeps everything for the all-ones vector', () => {
    const full = prunedArchitecture(layout, new Float32Array(layout.vectorLength).fill(1));
    const same = pruneWeights(full, base);
    expect([...same.keys()]).toEqual([...base.keys()]);
    for (const [k, t] of same) expect(t).toBe(base.get(k));
    expect(Object.values(moduleCounts(full)).some((c) => 'dropped' in c)).toBe(false);
  });
});

describe('sliceAxis', () => {
  it('copies the chosen indices along any axis, in order', () => {
    const t: HostTensor = { dtype: 'float32', shape: [2, 3, 2], data: Float32Array.from({ length: 12 }, (_, i) => i) };
    expect(Array.from(sliceAxis(t, 0, [1]).data as Float32Array)).toEqual([6, 7, 8, 9, 10, 11]);
    const s1 = sliceAxis(t, 1, [0, 2]);
    expect(s1.shape).toEqual([2, 2, 2]);
    expect(Array.from(s1.data as Float32Array)).toEqual([0, 1, 4, 5, 6, 7, 10, 11]);
    expect(Array.from(sliceAxis(t, 2, [1]).data as Float32Array)).toEqual([1, 3, 5, 7, 9, 11]);
  });
});
