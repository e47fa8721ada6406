import * as tf from '@tensorflow/tfjs-core';
import type { UNet2DConditionModel } from '../unet';
import { checkGuided, checkStep, combineGuidance, type GuidedStepInput, type HostArray, type UNetEngine, type UNetStepInput } from './engine';

/**
 * The eager tfjs UNet behind the {@link UNetEngine} interface (the fallback when ONNX Runtime is not wanted, and the
 * reference the ORT engine is checked against). Classifier-free guidance is one forward of batch 2B. The engine does
 * not own the model unless `ownsModel` is set.
 */
export class TfjsUNetEngine implements UNetEngine {
  readonly kind = 'tfjs';
  private disposed = false;

  constructor(
    readonly unet: UNet2DConditionModel<tf.Tensor>,
    private readonly ownsModel = false,
  ) {}

  async predict(input: UNetStepInput): Promise<HostArray> {
    const { timesteps } = checkStep(input, this.unet.config.inChannels, this.unet.config.crossAttentionDim);
    return this.run(input.sample, timesteps, input.encoderHiddenStates, 1);
  }

  async predictGuided(input: GuidedStepInput): Promise<HostArray> {
    const b = checkGuided(input);
    const both = await this.run(input.sample, new Float32Array(2 * b).fill(input.timestep), input.encoderHiddenStates, 2);
    return { data: combineGuidance(both.data, input.guidanceScale), dims: [b, ...both.dims.slice(1)] };
  }

  /** One forward; the sample batch is repeated `times` (CFG: 2). */
  private async run(sample: HostArray, timesteps: Float32Array, ehs: HostArray, times: number): Promise<HostArray> {
    const out = tf.tidy(() => {
      const x = tf.tensor(sample.data, [...sample.dims]);
      const r = this.unet.forward({
        sample: times === 1 ? x : tf.concat(new Array<tf.Tensor>(times).fill(x), 0),
        timestep: tf.tensor1d(timesteps),
        encoderHiddenStates: tf.tensor(ehs.data, [...ehs.dims]),
        blockOutputs: false,
      });
      return r.sample;
    });
    try {
      return { data: (await out.data()) as Float32Array, dims: [...out.shape] };
    } finally {
      out.dispose();
    }
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    if (this.ownsModel) this.unet.dispose();
  }
}
