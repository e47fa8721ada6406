import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { toTfTensor, type HostTensor } from '@aptp/core';
import { describeBackends, describeGolden, expectClose, expectNoTensorLeak, readGoldenTensors } from '@aptp/core/testing';
import { loadUNet, type UNet2DConditionModel, type UNetForwardOutput } from './unet';

/**
 * Gated forward (golden/aptp/README.md §4): every gate case of gated_forward.safetensors (output + 9 block outputs),
 * all-ones gates = plain forward exactly, CFG tiling, and the physically pruned expert (pruned/) against its golden
 * outputs and against the `consistent` gate placement with the same hard gates (§9.3).
 */
const BLOCKS: Record<string, string> = { d0: 'down0', d1: 'down1', d2: 'down2', d3: 'down3', m: 'mid', u0: 'up0', u1: 'up1', u2: 'up2', u3: 'up3' };

function disposeOut(o: UNetForwardOutput<tf.Tensor>): void {
  tf.dispose([o.sample, ...Object.values(o.blocks)]);
}

function compareCase(out: UNetForwardOutput<tf.Tensor>, io: Map<string, HostTensor>, prefix: string): void {
  expectClose(out.sample, io.get(`${prefix}.out_sample`)!.data as Float32Array, { name: `${prefix}.out_sample` });
  for (const [ref, ours] of Object.entries(BLOCKS)) expectClose(out.blocks[ours]!, io.get(`${prefix}.${ref}`)!.data as Float32Array, { name: `${prefix}.${ref}` });
}

describeGolden('aptp', 'gated UNet (golden aptp)', (dir) => {
  describeBackends('gated forward', (backend) => {
    let unet: UNet2DConditionModel<tf.Tensor>;
    let io: Map<string, HostTensor>;
    let inputs: tf.Tensor[];
    beforeAll(async () => {
      unet = await loadUNet(dir);
      io = readGoldenTensors(path.join(dir, 'gated_forward.safetensors'));
      inputs = ['sample', 'timestep', 'encoder_hidden_states'].map((k) => toTfTensor(io.get(k)!));
    });
    afterAll(() => {
      unet?.dispose();
      tf.dispose(inputs);
    });
    const run = (gates?: tf.Tensor, placement?: 'reference' | 'consistent', batchTimes = 1) => {
      const [s, t, e] = inputs.map((x) => (batchTimes === 1 ? x : tf.concat(new Array<tf.Tensor>(batchTimes).fill(x), 0))) as [tf.Tensor, tf.Tensor, tf.Tensor];
      const out = unet.forward({ sample: s, timestep: t, encoderHiddenStates: e, gates, placement });
      if (batchTimes > 1) tf.dispose([s, t, e]);
      return out;
    };

    // cpu (the slow oracle) checks the two non-trivial cases; wasm checks all three
    for (const gcase of backend === 'cpu' ? ['soft', 'hard'] : ['ones', 'soft', 'hard']) {
      it(`matches case ${gcase}: out_sample and the 9 block outputs`, () => {
        const gates = toTfTensor(io.get(`gates.${gcase}`)!);
        const out = run(gates);
        compareCase(out, io, gcase);
        disposeOut(out);
        gates.dispose();
      });
    }

    if (backend === 'wasm') it('all-ones gates give the plain forward exactly', () => {
      const ones = toTfTensor(io.get('gates.ones')!);
      const a = run(ones);
      const b = run();
      expect(Array.from(a.sample.dataSync())).toEqual(Array.from(b.sample.dataSync()));
      for (const k of Object.values(BLOCKS)) expect(Array.from(a.blocks[k]!.dataSync())).toEqual(Array.from(b.blocks[k]!.dataSync()));
      [a, b].forEach(disposeOut);
      ones.dispose();
    });

    if (backend === 'wasm') {
      it('tiles gates for classifier-free guidance (batch = 2 × gate batch)', () => {
        const soft = toTfTensor(io.get('gates.soft')!);
        const out = run(soft, 'reference', 2);
        const ref = io.get('soft.out_sample')!.data as Float32Array;
        const n = ref.length;
        const both = out.sample.dataSync();
        expectClose(both.subarray(0, n), ref, { name: 'cfg half 1' });
        expectClose(both.subarray(n), ref, { name: 'cfg half 2' });
        disposeOut(out);
        soft.dispose();
      });

      it('gated forward + backward w.r.t. the gates runs and does not leak', async () => {
        const soft = toTfTensor(io.get('gates.soft')!);
        let gnorm = 0;
        await expectNoTensorLeak(() => {
          const g = tf.grad((gv: tf.Tensor) => {
            const out = run(gv);
            tf.dispose(Object.values(out.blocks));
            return tf.sum(tf.square(out.sample)) as tf.Scalar;
          })(soft);
          gnorm = tf.tidy(() => tf.sum(tf.abs(g)).dataSync()[0]!);
          g.dispose();
        }, { steps: 1 });
        expect(gnorm).toBeGreaterThan(0);
        soft.dispose();
      });
    }

    it('the pruned expert (pruned/) matches its golden outputs, and equals the consistent-placement gated forward', async () => {
      const pio = readGoldenTensors(path.join(dir, 'pruned', 'io.safetensors'));
      const expert = await loadUNet(path.join(dir, 'pruned'), { pruned: true });
      const [s, t, e] = ['sample', 'timestep', 'encoder_hidden_states'].map((k) => toTfTensor(pio.get(k)!)) as [tf.Tensor, tf.Tensor, tf.Tensor];
      const pruned = expert.forward({ sample: s, timestep: t, encoderHiddenStates: e });
      compareCase(pruned, pio, 'pruned');
      const arch = toTfTensor(pio.get('arch_vector')!); // [1, L]: tiled over the batch of 2
      const gatedRef = unet.forward({ sample: s, timestep: t, encoderHiddenStates: e, gates: arch });
      compareCase(gatedRef, pio, 'gated_same_gates');
      const consistent = unet.forward({ sample: s, timestep: t, encoderHiddenStates: e, gates: arch, placement: 'consistent' });
      expectClose(consistent.sample, pruned.sample, { name: 'consistent vs pruned out_sample' });
      for (const k of Object.values(BLOCKS)) expectClose(consistent.blocks[k]!, pruned.blocks[k]!, { name: `consistent vs pruned ${k}` });
      [pruned, gatedRef, consistent].forEach(disposeOut);
      tf.dispose([s, t, e, arch]);
      expert.dispose();
    });
  });
});
