import * as path from 'node:path';
import { OrtModel, ShapeError, InputError, defaultOrtThreads, type OrtModelOptions } from '@aptp/core';
import { ONNX_FILES, readOnnxUNetInfo, type ExportedUNet, type OnnxUNetInfo } from '../export/onnx';
import { checkGuided, checkStep, combineGuidance, type GuidedStepInput, type HostArray, type UNetEngine, type UNetStepInput } from './engine';

/**
 * The ONNX Runtime UNet engine (issue 10 §2): an exported UNet/expert (`export/onnx.ts`) on the CPU execution
 * provider. Intra-op threads default to min(2, cores) (STACK.md §3: a second thread gives 1.2–1.7×, more do not
 * help here); classifier-free guidance is one call of batch 2B; the 2B input buffers are allocated once and reused
 * while the shapes stay the same (the latents are copied into both halves each step, the timesteps filled in place).
 */
export interface OrtUNetEngineOptions {
  /** Threads inside one op (default `defaultOrtThreads()`: 2 on this machine). */
  intraOpNumThreads?: number;
  graphOptimizationLevel?: OrtModelOptions['graphOptimizationLevel'];
}

export class OrtUNetEngine implements UNetEngine {
  readonly kind = 'ort';
  private guidedSample: Float32Array | null = null;
  private guidedTimesteps: Float32Array | null = null;

  private constructor(
    readonly model: OrtModel,
    readonly info: OnnxUNetInfo,
  ) {}

  /** Loads an export folder (`model.onnx` [+ `model.onnx.data`] + `aptp_onnx.json`). */
  static async load(dir: string, options: OrtUNetEngineOptions = {}): Promise<OrtUNetEngine> {
    const info = readOnnxUNetInfo(dir);
    const model = await OrtModel.load(path.join(dir, ONNX_FILES.model), ortOptions(options));
    return OrtUNetEngine.check(model, info);
  }

  /** Runs an in-memory export (weights inline). */
  static async fromExport(exported: ExportedUNet, options: OrtUNetEngineOptions = {}): Promise<OrtUNetEngine> {
    const model = await OrtModel.load(exported.toBytes(), { ...ortOptions(options), name: 'unet.onnx (in memory)' });
    return OrtUNetEngine.check(model, exported.info);
  }

  private static async check(model: OrtModel, info: OnnxUNetInfo): Promise<OrtUNetEngine> {
    const expected = ['sample', 'timestep', 'encoder_hidden_states'];
    if (!expected.every((n) => model.inputNames.includes(n)) || !model.outputNames.includes('out_sample')) {
      await model.dispose();
      throw new InputError('not a UNet export (inputs/outputs differ)', { code: 'E_FORMAT', file: model.name, expected: `inputs ${expected.join(', ')}; output out_sample`, found: `inputs ${model.inputNames.join(', ')}; outputs ${model.outputNames.join(', ')}` });
    }
    return new OrtUNetEngine(model, info);
  }

  async predict(input: UNetStepInput): Promise<HostArray> {
    const { batch, timesteps } = checkStep(input, this.info.inChannels, this.info.crossAttentionDim);
    this.checkFixed(input.sample.dims, input.encoderHiddenStates.dims);
    return this.run(input.sample.data, input.sample.dims, timesteps, input.encoderHiddenStates, batch);
  }

  async predictGuided(input: GuidedStepInput): Promise<HostArray> {
    const b = checkGuided(input);
    const [, c, h, w] = input.sample.dims as [number, number, number, number];
    const dims = [2 * b, c, h, w];
    const n = input.sample.data.length;
    if (this.guidedSample?.length !== 2 * n) this.guidedSample = new Float32Array(2 * n);
    this.guidedSample.set(input.sample.data, 0);
    this.guidedSample.set(input.sample.data, n);
    if (this.guidedTimesteps?.length !== 2 * b) this.guidedTimesteps = new Float32Array(2 * b);
    this.guidedTimesteps.fill(input.timestep);
    const step: UNetStepInput = { sample: { data: this.guidedSample, dims }, timestep: this.guidedTimesteps, encoderHiddenStates: input.encoderHiddenStates };
    checkStep(step, this.info.inChannels, this.info.crossAttentionDim);
    this.checkFixed(dims, input.encoderHiddenStates.dims);
    const both = await this.run(this.guidedSample, dims, this.guidedTimesteps, input.encoderHiddenStates, 2 * b);
    return { data: combineGuidance(both.data, input.guidanceScale), dims: [b, ...both.dims.slice(1)] };
  }

  private async run(sample: Float32Array, dims: readonly number[], timesteps: Float32Array, ehs: HostArray, batch: number): Promise<HostArray> {
    const out = await this.model.run(
      { sample: { data: sample, dims }, timestep: { data: timesteps, dims: [batch] }, encoder_hidden_states: { data: ehs.data, dims: ehs.dims } },
      ['out_sample'],
    );
    const o = out.out_sample!;
    return { data: o.data as Float32Array, dims: o.dims };
  }

  /** A model exported with fixed sizes accepts only those (named in the error). */
  private checkFixed(sample: readonly number[], ehs: readonly number[]): void {
    const check = (declared: readonly (number | string)[], found: readonly number[], field: string) => {
      declared.forEach((d, i) => {
        if (typeof d === 'number' && d !== found[i]) {
          throw new ShapeError('the exported model has a fixed size here', { code: 'E_SHAPE', file: this.model.name, field, expected: `[${declared.join(',')}]`, found: `[${found.join(',')}]` });
        }
      });
    };
    check(this.info.inputs.sample, sample, 'sample');
    check(this.info.inputs.encoder_hidden_states, ehs, 'encoder_hidden_states');
  }

  async dispose(): Promise<void> {
    this.guidedSample = null;
    this.guidedTimesteps = null;
    await this.model.dispose();
  }
}

function ortOptions(options: OrtUNetEngineOptions): OrtModelOptions {
  return { intraOpNumThreads: options.intraOpNumThreads ?? defaultOrtThreads(), interOpNumThreads: 1, graphOptimizationLevel: options.graphOptimizationLevel ?? 'all' };
}
