import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { InputError, toTfTensor, type HostTensor } from '@aptp/core';
import { describeBackends, describeGolden, expectClose, expectNoTensorLeak, readGoldenTensors } from '@aptp/core/testing';
import { readUNetConfig } from './config';
import { architectureLayout } from './gates/layout';
import { expertConfig, loadExpert, openSharedExperts, prunedWeightSource } from './experts';
import { pruneUNetFolder, pruneWeights, prunedArchitecture } from './prune';
import { loadUNet } from './unet';
import type { UNet2DConditionModel } from './unet';
import { hostSource, safetensorsSource } from './weights';

/** Golden block names (README §4.1) → our block-output keys. */
const BLOCKS: Record<string, string> = { d0: 'down0', d1: 'down1', d2: 'down2', d3: 'down3', m: 'mid', u0: 'up0', u1: 'up1', u2: 'up2', u3: 'up3' };

describeGolden('aptp', 'shared-weight experts and pruned experts (pruned/io.safetensors)', (dir) => {
  const cfg = readUNetConfig(path.join(dir, 'config.json'));
  const layout = architectureLayout(cfg);
  const io = readGoldenTensors(path.join(dir, 'pruned', 'io.safetensors'));
  const arch = io.get('arch_vector')!.data as Float32Array;
  const ref = readGoldenTensors(path.join(dir, 'pruned', 'diffusion_pytorch_model.safetensors'));

  it('presents the base weights as the pruned expert, slicing lazily', () => {
    const base = safetensorsSource(path.join(dir, 'diffusion_pytorch_model.safetensors'));
    try {
      const src = prunedWeightSource(base, prunedArchitecture(layout, arch));
      expect(src.keys().sort()).toEqual([...ref.keys()].sort());
      for (const [k, t] of ref) {
        expect(src.shape(k)).toEqual(t.shape);
        expect(Array.from(src.read(k).data as Float32Array)).toEqual(Array.from(t.data as Float32Array));
      }
      expect(src.has('down_blocks.1.attentions.1.norm.weight')).toBe(false);
      expect(() => src.read('down_blocks.1.attentions.1.norm.weight')).toThrow(InputError);
    } finally {
      base.close();
    }
  });

  it('strips the gates from the expert config', () => {
    const e = expertConfig(cfg);
    expect(architectureLayout(e).vectorLength).toBe(0);
    expect(e.blockOutChannels).toEqual(cfg.blockOutChannels);
  });

  describeBackends('pruned forward', () => {
    const input = (t: HostTensor) => toTfTensor(t);

    function expectForward(model: UNet2DConditionModel<tf.Tensor>, prefix: string, gates?: tf.Tensor): void {
      tf.tidy(() => {
        const out = model.forward({ sample: input(io.get('sample')!), timestep: input(io.get('timestep')!), encoderHiddenStates: input(io.get('encoder_hidden_states')!), ...(gates ? { gates, placement: 'consistent' as const } : {}) });
        const r = io.get(`${prefix}.out_sample`)!;
        expectClose(out.sample, r.data as Float32Array, { name: `${prefix}.out_sample`, shape: r.shape });
        for (const [g, ours] of Object.entries(BLOCKS)) {
          const rb = io.get(`${prefix}.${g}`)!;
          expectClose(out.blocks[ours]!, rb.data as Float32Array, { name: `${prefix}.${g}`, shape: rb.shape });
        }
      });
    }

    it('a shared-weight expert reproduces the reference pruned model (output and nine block outputs)', () => {
      const experts = openSharedExperts(dir, [new Float32Array(layout.vectorLength).fill(1), arch]);
      try {
        expectForward(experts.get(1), 'pruned');
        expect(experts.get(1)).toBe(experts.get(1));
      } finally {
        experts.dispose();
      }
    });

    it('an expert folder saves, reloads and reproduces the reference pruned model', async () => {
      const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'aptp-expert-'));
      try {
        pruneUNetFolder(dir, arch, tmp);
        const model = await loadExpert(tmp);
        try {
          expectForward(model, 'pruned');
        } finally {
          model.dispose();
        }
      } finally {
        fs.rmSync(tmp, { recursive: true, force: true });
      }
    });

    it("equals the full model hard-gated with 'consistent' placement (pruned = gated, issue item 5)", async () => {
      const full = await loadUNet(dir);
      try {
        const gates = tf.tensor2d(arch, [1, layout.vectorLength]);
        expectForward(full, 'pruned', gates);
        gates.dispose();
      } finally {
        full.dispose();
      }
    });

  });

  describeBackends('expert memory', () => {
    const input = (t: HostTensor) => toTfTensor(t);
    it('does not leak tensors when building, running and evicting experts', async () => {
      const base = readGoldenTensors(path.join(dir, 'diffusion_pytorch_model.safetensors'));
      const before = tf.memory().numTensors;
      const experts = openSharedExperts(dir, [arch, new Float32Array(layout.vectorLength).fill(1)], { maxLoaded: 1 });
      const expert = experts.get(0); // built outside tf.tidy: a tidy would dispose the weights it creates
      await expectNoTensorLeak(
        () => {
          tf.tidy(() => {
            expert.forward({ sample: input(io.get('sample')!), timestep: 10, encoderHiddenStates: input(io.get('encoder_hidden_states')!) });
          });
        },
        { steps: 2 },
      );
      experts.get(1); // evicts expert 0
      experts.dispose();
      experts.dispose();
      expect(tf.memory().numTensors).toBe(before);
      // an in-memory pre-pruned state dict is an equivalent source
      const mem = hostSource(pruneWeights(prunedArchitecture(layout, arch), base));
      expect(mem.keys().sort()).toEqual([...ref.keys()].sort());
    });
  }, ['wasm']);
});
