import * as fs from 'node:fs';
import * as path from 'node:path';
import { InputError, OnnxOps, writeFileAtomic, writeJsonAtomic, type OnnxDim, type OnnxValue } from '@aptp/core';
import { readUNetConfig, type UNetConfig } from '../config';
import { UNet2DConditionModel, UNET_FILES } from '../unet';
import { safetensorsSource, type TensorFactory, type WeightSource } from '../weights';

/**
 * ONNX export of a UNet or a pruned expert (issue 10; STYLE.md §2 `unet-gating/export/onnx`). The graph is not written
 * by hand: the **same** `UNet2DConditionModel` and block classes the tfjs model uses are built over an `OnnxOps`
 * (`@aptp/core`), whose operations emit ONNX nodes, and `forward` is run once on symbolic graph inputs. Weights become
 * initializers under their diffusers keys (conv `[O, I, kh, kw]`, linear transposed `[I, O]`), fp32 or fp16.
 *
 * The model: inputs `sample [B, C_in, H, W]`, `timestep [B]` (float32), `encoder_hidden_states [B, S, D]`; output
 * `out_sample [B, C_out, H, W]` (optionally the nine block outputs `blocks.down0 … blocks.up3`, NCHW). Each of B, H,
 * W, S is fixed or dynamic. An export folder holds `model.onnx`, `aptp_onnx.json` (what was exported, for the
 * engine) and, for models past the 2 GiB protobuf limit, `model.onnx.data` (ONNX external data).
 */

export const ONNX_FILES = { model: 'model.onnx', data: 'model.onnx.data', info: 'aptp_onnx.json' } as const;

/** A fixed size or `'dynamic'` (a symbolic dim in the graph). */
export type ExportDim = number | 'dynamic';

export interface OnnxExportOptions {
  /** Batch size (default `'dynamic'`). Classifier-free guidance runs cond + uncond as one batch of 2B. */
  batch?: ExportDim;
  /** Latent height and width (default `'dynamic'`; must be divisible by 2^(down blocks − 1) at run time). */
  height?: ExportDim;
  width?: ExportDim;
  /** Text tokens S (default `'dynamic'`; 77 for CLIP). */
  sequenceLength?: ExportDim;
  /** A physically pruned expert: widths from the weights, absent sub-blocks are identities (default false). */
  pruned?: boolean;
  /** Also output the nine block outputs (block distillation targets). Default false. */
  blockOutputs?: boolean;
  /** Weight storage (default float32; float16 halves the file, math stays float32). */
  weightDtype?: 'float32' | 'float16';
  /** `fused` (default, `com.microsoft.MultiHeadAttention`) or `standard` (plain ONNX ops). */
  attention?: 'fused' | 'standard';
  /** Default-domain opset (default 21). */
  opset?: number;
}

/** What an export contains (`aptp_onnx.json`); the ORT engine reads it. */
export interface OnnxUNetInfo {
  format: 'aptp-onnx-unet';
  version: 1;
  inputs: { sample: OnnxDim[]; timestep: OnnxDim[]; encoder_hidden_states: OnnxDim[] };
  outputs: Record<string, OnnxDim[]>;
  inChannels: number;
  outChannels: number;
  crossAttentionDim: number;
  /** Down blocks: H and W must be divisible by 2^(this − 1). */
  downBlocks: number;
  pruned: boolean;
  weightDtype: 'float32' | 'float16';
  attention: 'fused' | 'standard';
  opset: number;
  /** Weight count (float parameters). */
  parameters: number;
  /** Weights stored in `model.onnx.data`. */
  externalData: boolean;
}

export interface ExportedUNet {
  info: OnnxUNetInfo;
  /** The graph builder holding the model (weights as initializers). */
  ops: OnnxOps;
  /** The serialised model, weights inline (fails past the 2 GiB protobuf limit: use `exportUNetFolder`). */
  toBytes(): Uint8Array;
}

const dim = (d: ExportDim | undefined, name: string): OnnxDim => {
  const v = d ?? 'dynamic';
  if (v === 'dynamic') return name;
  if (!Number.isInteger(v) || v < 1) throw new InputError('bad export size', { field: name, expected: "a positive integer or 'dynamic'", found: d });
  return v;
};

/**
 * Builds the ONNX model of a UNet from its config and weights (diffusers layout, any `WeightSource`: a safetensors
 * file, in-memory arrays, or `prunedWeightSource(base, plan)` for an expert sliced on the fly).
 */
export function exportUNetToOnnx(config: UNetConfig, source: WeightSource, options: OnnxExportOptions = {}): ExportedUNet {
  const o = new OnnxOps({ opset: options.opset, attention: options.attention, weightDtype: options.weightDtype, graphName: 'unet', docString: `UNet2DConditionModel from ${source.file}` });
  let parameters = 0;
  const factory: TensorFactory<OnnxValue> = {
    conv: (w, key) => ((parameters += w.data.length), o.convWeight(w as { shape: number[]; data: ArrayLike<number> }, key)),
    linear: (w, key) => ((parameters += w.data.length), o.linearWeight(w as { shape: number[]; data: ArrayLike<number> }, key)),
    vector: (v, key) => ((parameters += v.data.length), o.vectorWeight(v as { shape: number[]; data: ArrayLike<number> }, key)),
  };
  const pruned = options.pruned ?? false;
  const unet = UNet2DConditionModel.create(config, source, o, factory, () => {}, { pruned });
  const b = dim(options.batch, 'batch');
  const h = dim(options.height, 'height');
  const w = dim(options.width, 'width');
  const s = dim(options.sequenceLength, 'sequence');
  const inputs = {
    sample: [b, config.inChannels, h, w],
    timestep: [b],
    encoder_hidden_states: [b, s, config.crossAttentionDim],
  };
  const out = unet.forward({
    sample: o.input('sample', 'float32', inputs.sample),
    timestep: o.input('timestep', 'float32', inputs.timestep),
    encoderHiddenStates: o.input('encoder_hidden_states', 'float32', inputs.encoder_hidden_states),
  });
  const outputs: Record<string, OnnxDim[]> = { out_sample: [b, config.outChannels, h, w] };
  o.output(out.sample, 'out_sample', outputs.out_sample);
  if (options.blockOutputs) {
    for (const [k, v] of Object.entries(out.blocks)) {
      outputs[`blocks.${k}`] = [...v.shape];
      o.output(v, `blocks.${k}`);
    }
  }
  const info: OnnxUNetInfo = {
    format: 'aptp-onnx-unet',
    version: 1,
    inputs,
    outputs,
    inChannels: config.inChannels,
    outChannels: config.outChannels,
    crossAttentionDim: config.crossAttentionDim,
    downBlocks: config.downBlockTypes.length,
    pruned,
    weightDtype: o.weightDtype,
    attention: o.attentionKind,
    opset: o.opset,
    parameters,
    externalData: false,
  };
  return { info, ops: o, toBytes: () => o.serialize({ metadata: { aptp_onnx: JSON.stringify(info) } }).model };
}

export interface ExportFolderOptions extends OnnxExportOptions {
  /**
   * Keep weights in `model.onnx.data` (ONNX external data) instead of inside `model.onnx`. `auto` (default): when the
   * weights exceed 1 GiB (a protobuf cannot exceed 2 GiB; SD 2.1 fp32 is 3.4 GB).
   */
  externalData?: boolean | 'auto';
}

const AUTO_EXTERNAL_BYTES = 1 << 30;

/**
 * Exports a diffusers UNet folder (`config.json` + `diffusion_pytorch_model.safetensors`, a full model or an expert
 * folder) into `outDir` (`model.onnx`, `aptp_onnx.json`, maybe `model.onnx.data`). An expert folder written by
 * `pruneUNetFolder` (config with `_aptp_pruned`) is exported as pruned unless `pruned` says otherwise.
 */
export function exportUNetFolder(unetDir: string, outDir: string, options: ExportFolderOptions = {}): OnnxUNetInfo {
  const { ops, info } = exportUNetDir(unetDir, options);
  const external = options.externalData === true || ((options.externalData ?? 'auto') === 'auto' && ops.weightBytes > AUTO_EXTERNAL_BYTES);
  info.externalData = external;
  const { model, data } = ops.serialize({ externalData: external ? ONNX_FILES.data : undefined, metadata: { aptp_onnx: JSON.stringify(info) } });
  fs.mkdirSync(outDir, { recursive: true });
  const dataFile = path.join(outDir, ONNX_FILES.data);
  if (external) writeFileAtomic(dataFile, data);
  else fs.rmSync(dataFile, { force: true });
  writeFileAtomic(path.join(outDir, ONNX_FILES.model), model);
  // the info file last: a folder with it is complete
  writeJsonAtomic(path.join(outDir, ONNX_FILES.info), info);
  return info;
}

/** Bytes of a UNet folder's weights file (0 when absent), to decide whether an in-memory export fits. */
export function unetWeightBytes(unetDir: string): number {
  const f = path.join(unetDir, UNET_FILES.weights);
  return fs.existsSync(f) ? fs.statSync(f).size : 0;
}

/** The in-memory ONNX model of a UNet folder (full model or expert folder); see `exportUNetFolder` for files. */
export function exportUNetDir(unetDir: string, options: OnnxExportOptions = {}): ExportedUNet {
  const configFile = path.join(unetDir, UNET_FILES.config);
  const weightsFile = path.join(unetDir, UNET_FILES.weights);
  for (const f of [configFile, weightsFile]) {
    if (!fs.existsSync(f)) {
      throw new InputError('UNet folder is incomplete', { code: 'E_FILE_MISSING', file: f, expected: `${unetDir}/{${UNET_FILES.config}, ${UNET_FILES.weights}}`, found: 'missing' });
    }
  }
  const config = readUNetConfig(configFile);
  const pruned = options.pruned ?? isExpertConfig(configFile);
  const source = safetensorsSource(weightsFile);
  try {
    return exportUNetToOnnx(config, source, { ...options, pruned });
  } finally {
    source.close();
  }
}

function isExpertConfig(configFile: string): boolean {
  try {
    return (JSON.parse(fs.readFileSync(configFile, 'utf8')) as Record<string, unknown>)._aptp_pruned !== undefined;
  } catch {
    return false; // readUNetConfig already reported unreadable files
  }
}

/** Reads and checks `aptp_onnx.json` of an export folder. */
export function readOnnxUNetInfo(dir: string): OnnxUNetInfo {
  const file = path.join(dir, ONNX_FILES.info);
  if (!fs.existsSync(file) || !fs.existsSync(path.join(dir, ONNX_FILES.model))) {
    throw new InputError('ONNX export folder is incomplete', { code: 'E_FILE_MISSING', file: dir, expected: `${dir}/{${ONNX_FILES.model}, ${ONNX_FILES.info}}`, found: 'missing' });
  }
  let json: Partial<OnnxUNetInfo>;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8')) as Partial<OnnxUNetInfo>;
  } catch (err) {
    throw new InputError('unreadable ONNX export info', { code: 'E_JSON', file, cause: err });
  }
  if (json.format !== 'aptp-onnx-unet' || json.version !== 1) {
    throw new InputError('not an APTP ONNX UNet export', { code: 'E_FORMAT', file, field: 'format', expected: 'aptp-onnx-unet v1', found: `${json.format} v${json.version}` });
  }
  return json as OnnxUNetInfo;
}
