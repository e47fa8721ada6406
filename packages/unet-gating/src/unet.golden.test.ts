import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { toTfTensor, type HostTensor } from '@aptp/core';
import { describeBackends, describeGolden, expectClose, expectNoTensorLeak, readGoldenTensors } from '@aptp/core/testing';
import { loadUNet, type UNet2DConditionModel } from './unet';
import type { CaptureKind } from './blocks/context';

/**
 * Every tensor of golden/unet-tiny{,-b}/io.safetensors (output and per-module intermediates) within
 * 1e-4·max(1, max|ref|) (golden README §2.6), on cpu and wasm.
 */
for (const model of ['unet-tiny', 'unet-tiny-b']) {
  describeGolden(model, `UNet golden ${model}`, (dir) => {
    describeBackends(model, (backend) => {
      let unet: UNet2DConditionModel<tf.Tensor>;
      let io: Map<string, HostTensor>;
      beforeAll(async () => {
        unet = await loadUNet(dir);
        io = readGoldenTensors(path.join(dir, 'io.safetensors'));
      });
      afterAll(() => unet?.dispose());

      it('matches every tensor of io.safetensors (output and intermediates)', () => {
        const inputs = ['sample', 'timestep', 'encoder_hidden_states'].map((k) => toTfTensor(io.get(k)!));
        const [sample, timestep, ehs] = inputs as [tf.Tensor, tf.Tensor, tf.Tensor];
        const captured = new Map<string, tf.Tensor>();
        const toPublic = (v: tf.Tensor, kind: CaptureKind) => (kind === 'map' ? unet.ops.toNCHW(v) : tf.clone(v));
        const out = unet.forward({
          sample,
          timestep,
          encoderHiddenStates: ehs,
          capture: (name, v, kind) => captured.set(name, tf.keep(toPublic(v, kind))),
        });
        captured.set('out_sample', out.sample);
        const expected = [...io.keys()].filter((k) => !['sample', 'timestep', 'encoder_hidden_states'].includes(k));
        let worst = 0;
        for (const name of expected) {
          const ours = captured.get(name);
          if (!ours) throw new Error(`no intermediate captured for ${name}`);
          const ref = io.get(name)!;
          expect([...ours.shape]).toEqual(ref.shape);
          const r = expectClose(ours, ref.data as Float32Array, { name });
          worst = Math.max(worst, r.maxAbsDiff / r.tol);
        }
        // block outputs are the block-level captures
        expectClose(out.blocks.mid!, io.get('mid_block')!.data as Float32Array, { name: 'blocks.mid' });
        expectClose(out.blocks.down0!, io.get('down_blocks.0.hidden_states')!.data as Float32Array, { name: 'blocks.down0' });
        expectClose(out.blocks.up0!, io.get('up_blocks.0')!.data as Float32Array, { name: 'blocks.up0' });
        expect(Object.keys(out.blocks)).toEqual([...unet.structure.down.map((b) => b.key), 'mid', ...unet.structure.up.map((b) => b.key)]);
        expect(worst).toBeLessThanOrEqual(1);
        tf.dispose([...captured.values(), ...Object.values(out.blocks), ...inputs]);
      });

      // the cpu backend is ~10× slower: its leak check is registered for the small model only (unet-tiny runs it on wasm)
      if (!(backend === 'cpu' && model === 'unet-tiny')) it('repeated forwards do not leak tensors', async () => {
        const inputs = ['sample', 'timestep', 'encoder_hidden_states'].map((k) => toTfTensor(io.get(k)!));
        const [sample, timestep, ehs] = inputs as [tf.Tensor, tf.Tensor, tf.Tensor];
        await expectNoTensorLeak(() => {
          const out = unet.forward({ sample, timestep, encoderHiddenStates: ehs });
          tf.dispose([out.sample, ...Object.values(out.blocks)]);
        }, { steps: 2 });
        tf.dispose(inputs);
      });
    });
  });
}
