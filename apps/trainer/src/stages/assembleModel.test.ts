import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readSafetensors, writeJsonAtomic, writeSafetensors } from '@aptp/core';
import { useBackend } from '@aptp/core/testing';
import { HashedTextConditioner, parseUNetConfig, pruneUNetFolder, randomUNetWeights, readPrunedUNet } from '@aptp/unet-gating';
import { parsePruneConfig } from '../config/reference';
import { startRun } from '../loop/startRun';
import { assembleModel } from './assembleModel';
import { readExperts, runPrune } from './prune';

/** The model folder from a tiny random teacher and a 2-step prune run (K = 2). */
const UNET = {
  _class_name: 'UNet2DConditionModel',
  sample_size: 16,
  in_channels: 3,
  out_channels: 3,
  block_out_channels: [8, 16],
  down_block_types: ['DownBlock2D', 'CrossAttnDownBlock2D'],
  mid_block_type: 'UNetMidBlock2DCrossAttn',
  up_block_types: ['CrossAttnUpBlock2D', 'UpBlock2D'],
  layers_per_block: 2,
  attention_head_dim: [1, 2],
  cross_attention_dim: 8,
  norm_num_groups: 4,
  use_linear_projection: true,
  gated_ff: true,
  ff_gate_width: 4,
};

describe('assembleModel', () => {
  let tmp: string;
  let teacher: string;
  let pruneDir: string;
  beforeAll(async () => {
    await useBackend('wasm');
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'aptp-assemble-'));
    teacher = path.join(tmp, 'teacher');
    fs.mkdirSync(path.join(teacher, 'unet'), { recursive: true });
    writeJsonAtomic(path.join(teacher, 'unet/config.json'), UNET);
    writeSafetensors(path.join(teacher, 'unet/diffusion_pytorch_model.safetensors'), Object.fromEntries(randomUNetWeights(parseUNetConfig(UNET), 7)));
    writeJsonAtomic(path.join(teacher, 'scheduler/scheduler_config.json'), { _class_name: 'DDIMScheduler', num_train_timesteps: 1000, prediction_type: 'v_prediction' });
    new HashedTextConditioner({ dim: 8, sequenceLength: 6 }).save(teacher);
    const config = parsePruneConfig({
      seed: 5,
      data: { dataset: { format: 'synthetic', imageSize: 16, numSamples: 8 }, loader: { transform: 'synthetic', seed: 3 } },
      model: { pretrainedModelNameOrPath: teacher, promptEncoder: { type: 'synthetic', dim: 16, seed: 2 }, router: { inputDim: 16, numCodes: 2 } },
      training: { trainBatchSize: 2, maxTrainSteps: 2, hypernetPretrainingSteps: 1, optim: { hypernetLearningRate: 0.3, quantizerLearningRate: 0.3, scaleLr: false, lrWarmupSteps: 0 } },
    });
    pruneDir = path.join(tmp, 'prune');
    const s = startRun({ name: 'prune', out: pruneDir, config });
    await runPrune({ config, run: s.run });
    s.run.close();
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('writes teacher, router, prompt encoder and experts; a code without fine-tuned weights is the sliced teacher', () => {
    // expert 0 "fine-tuned" (here: a pruned folder with changed weights), expert 1 sliced
    const experts = readExperts(pruneDir).experts;
    const tuned = path.join(tmp, 'tuned-0');
    pruneUNetFolder(path.join(teacher, 'unet'), experts[0]!.archVector, tuned);
    const w = readSafetensors(path.join(tuned, 'diffusion_pytorch_model.safetensors'));
    const conv = w.get('conv_out.weight')!;
    writeSafetensors(path.join(tuned, 'diffusion_pytorch_model.safetensors'), { ...Object.fromEntries(w), 'conv_out.weight': { ...conv, data: Float32Array.from(conv.data as Float32Array, (v) => v + 1) } });

    const notes: string[] = [];
    const out = path.join(tmp, 'model');
    const m = assembleModel({ out, teacher, pruneRun: pruneDir, finetuned: [tuned, null], onnx: true, onNote: (l) => notes.push(l) });
    expect(m.experts.map((e) => [e.code, e.source])).toEqual([[0, 'finetuned'], [1, 'sliced']]);
    expect(notes).toEqual([expect.stringMatching(/^expert 1: no fine-tuned weights; sliced from the teacher/)]);

    expect(fs.readFileSync(path.join(out, 'unet/diffusion_pytorch_model.safetensors')).equals(fs.readFileSync(path.join(teacher, 'unet/diffusion_pytorch_model.safetensors')))).toBe(true);
    expect(fs.readFileSync(path.join(out, 'router/router.safetensors')).equals(fs.readFileSync(path.join(pruneDir, 'router/router.safetensors')))).toBe(true);
    expect(JSON.parse(fs.readFileSync(path.join(out, 'prompt_encoder/config.json'), 'utf8'))).toEqual({ _class_name: 'SyntheticPromptEncoder', dim: 16, seed: 2 });
    for (const f of ['scheduler/scheduler_config.json', 'conditioning/config.json', 'unet/onnx/model.onnx', 'experts/0/onnx/model.onnx', 'experts/1/onnx/model.onnx']) expect(fs.existsSync(path.join(out, f))).toBe(true);
    // expert k has code k's hard architecture; 0 keeps its (changed) weights, 1 is exactly the teacher sliced
    for (const k of [0, 1]) expect(Array.from(readPrunedUNet(path.join(out, 'experts', String(k))).plan.archVector)).toEqual(experts[k]!.archVector);
    const got0 = readSafetensors(path.join(out, 'experts/0/diffusion_pytorch_model.safetensors')).get('conv_out.weight')!;
    expect(Array.from(got0.data as Float32Array)).toEqual(Array.from(conv.data as Float32Array, (v) => Math.fround(v + 1)));
    const sliced = path.join(tmp, 'sliced-1');
    pruneUNetFolder(path.join(teacher, 'unet'), experts[1]!.archVector, sliced);
    expect(fs.readFileSync(path.join(out, 'experts/1/diffusion_pytorch_model.safetensors')).equals(fs.readFileSync(path.join(sliced, 'diffusion_pytorch_model.safetensors')))).toBe(true);
    const index = JSON.parse(fs.readFileSync(path.join(out, 'model_index.json'), 'utf8'));
    expect(index._aptp).toMatchObject({ router: { numCodes: 2, baseline: 'none' }, onnx: true });
  });

  it('writes a teacher-only folder without a prune run, and refuses a folder that is not empty', () => {
    const out = path.join(tmp, 'teacher-only');
    const m = assembleModel({ out, teacher });
    expect(m.experts).toEqual([]);
    expect(fs.readdirSync(out).sort()).toEqual(['conditioning', 'model_index.json', 'scheduler', 'unet']);
    expect(() => assembleModel({ out, teacher })).toThrow(/output folder is not empty/);
    expect(() => assembleModel({ out: path.join(tmp, 'x'), teacher: path.join(tmp, 'nothing') })).toThrow(/teacher model folder is incomplete/);
  });
});
