/**
 * Test-only helpers (not exported): a tiny pixel-space APTP model folder in a temp dir — a random 3-channel UNet,
 * the synthetic world's hashed text conditioner, a synthetic prompt encoder, a router with three hand-made
 * architecture codes (all-ones, half width, quarter width with two blocks dropped) and, as asked, the experts as
 * expert folders, as `experts/arch_vectors.safetensors` or implicit (the router's codes).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { OnnxGraph, Rng, readSafetensors, vocabFromMerges, writeSafetensors, type HostTensor } from '@aptp/core';
import { HashedTextConditioner, aptpLayout, parseUNetConfig, pruneUNetFolder, randomUNetWeights, type ArchitectureLayout, type UNetConfig } from '@aptp/unet-gating';
import { PromptRouter, SyntheticPromptEncoder, loadRouter, saveReferenceRouter, saveRouter } from '@aptp/router';

const made: string[] = [];
afterAll(() => {
  for (const dir of made.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
});

export function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'aptp-sampler-'));
  made.push(dir);
  return dir;
}

export const UNET_JSON = {
  _class_name: 'UNet2DConditionModel',
  block_out_channels: [8, 16],
  down_block_types: ['CrossAttnDownBlock2D', 'DownBlock2D'],
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D'],
  attention_head_dim: 2,
  cross_attention_dim: 8,
  layers_per_block: 1,
  norm_num_groups: 4,
  in_channels: 3,
  out_channels: 3,
  sample_size: 8,
  use_linear_projection: false,
};

export const SCHEDULER_JSON = {
  _class_name: 'DDIMScheduler',
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  beta_start: 0.00085,
  clip_sample: false,
  num_train_timesteps: 1000,
  prediction_type: 'v_prediction',
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
};

export const PROMPT_DIM = 16;

/** Prompts with these words route to codes 0, 1, 2 (see the predictor in `writeTinyAptpModel`). */
export const ROUTING_KEYWORDS = ['circle', 'letter', 'triangles'];

/** Three architecture codes: 0 all ones; 1 the first half of every width gate; 2 a quarter, two depth gates off. */
export function archCodes(layout: ArchitectureLayout): Float32Array[] {
  const L = layout.vectorLength;
  const ones = new Float32Array(L).fill(1);
  const half = new Float32Array(L).fill(1);
  const quarter = new Float32Array(L).fill(1);
  for (const g of layout.widthGates) {
    for (let k = 0; k < g.width; k++) {
      half[g.offset + k] = k < Math.ceil(g.width / 2) ? 1 : 0;
      quarter[g.offset + k] = k >= g.width - Math.max(1, Math.floor(g.width / 4)) ? 1 : 0;
    }
  }
  // drop the first down transformer and the last up transformer (shape-preserving sub-blocks)
  for (const d of layout.depthGates) if (d.kind === 'transformer') quarter[d.vectorIndex] = 0;
  return [ones, half, quarter];
}

export interface TinyAptpModel {
  dir: string;
  config: UNetConfig;
  layout: ArchitectureLayout;
  codes: Float32Array[];
}

/**
 * Writes the model folder. `experts`: `codes` (none on disk: the router's codes), `folders` (experts/<k>/ by
 * pruneUNetFolder) or `vectors` (experts/arch_vectors.safetensors, the codes in reverse order).
 */
export function writeTinyAptpModel(
  options: { experts?: 'codes' | 'folders' | 'vectors'; router?: boolean | 'released'; seed?: number; sd?: boolean } = {},
): TinyAptpModel {
  const dir = tempDir();
  const json = options.sd ? { ...UNET_JSON, in_channels: 4, out_channels: 4 } : UNET_JSON;
  const config = parseUNetConfig(json);
  const unetDir = path.join(dir, 'unet');
  fs.mkdirSync(unetDir, { recursive: true });
  writeSafetensors(path.join(unetDir, 'diffusion_pytorch_model.safetensors'), Object.fromEntries(randomUNetWeights(config, options.seed ?? 1, 0.2)) as Record<string, HostTensor>);
  fs.writeFileSync(path.join(unetDir, 'config.json'), JSON.stringify(json));
  fs.mkdirSync(path.join(dir, 'scheduler'));
  fs.writeFileSync(path.join(dir, 'scheduler', 'scheduler_config.json'), JSON.stringify(SCHEDULER_JSON));
  if (options.sd) writeSdParts(dir, 8, 6);
  else new HashedTextConditioner({ dim: 8, sequenceLength: 6, seed: 2 }).save(dir);
  const layout = aptpLayout(config);
  const codes = archCodes(layout);
  if (options.router ?? true) {
    fs.mkdirSync(path.join(dir, 'prompt_encoder'));
    fs.writeFileSync(path.join(dir, 'prompt_encoder', 'config.json'), JSON.stringify({ _class_name: 'SyntheticPromptEncoder', dim: PROMPT_DIM, seed: 0 }));
    const router = PromptRouter.init(layout, { inputDim: PROMPT_DIM, numCodes: 3, depthOrder: layout.depthGates.map((_, i) => i) }, options.seed ?? 7);
    const gs = tf.tensor2d(new Float32Array([...codes[0]!, ...codes[1]!, ...codes[2]!].map((v) => (v ? 0.9 : 0.1))), [3, layout.vectorLength]);
    router.codebook.setEmbeddingGs(gs);
    gs.dispose();
    fs.mkdirSync(path.join(dir, 'router'));
    saveRouter(router, path.join(dir, 'router'));
    router.dispose();
    // a predictor that sends prompts with "circle" to code 0, "letter" to code 1 and "triangles" to code 2: the rows
    // of head i are 20 · Σ_k (2·code_k − 1) ⊗ û_k with û_k the normalised embedding of the keyword, bias −3 (cancels the
    // +3 offset of the Gumbel-sigmoid)
    const enc = new SyntheticPromptEncoder({ dim: PROMPT_DIM, seed: 0 });
    const dirs = ROUTING_KEYWORDS.map((w) => {
      const v = enc.embedOne(w);
      const n = Math.hypot(...v);
      return v.map((x) => x / n);
    });
    const rowOf = (j: number): Float32Array => {
      const r = new Float32Array(PROMPT_DIM);
      codes.forEach((c, k) => dirs[k]!.forEach((u, d) => (r[d] = r[d]! + 20 * (2 * c[j]! - 1) * u)));
      return r;
    };
    const heads: number[][] = [...layout.widthGates.map((g) => Array.from({ length: g.width }, (_, i) => g.offset + i)), layout.depthGates.map((d) => d.vectorIndex)];
    const file = path.join(dir, 'router', 'router.safetensors');
    const out: Record<string, HostTensor> = {};
    for (const [k, t] of readSafetensors(file)) {
      const m = /^hypernet\.mh_fc\.(\d+)\.(weight|bias)$/.exec(k);
      if (!m) {
        out[k] = t;
        continue;
      }
      const rows = heads[Number(m[1])]!;
      const data = m[2] === 'bias' ? new Float32Array(rows.length).fill(-3) : new Float32Array(rows.flatMap((j) => [...rowOf(j)]));
      out[k] = { dtype: 'float32', shape: t.shape, data };
    }
    writeSafetensors(file, out);
    if (options.router === 'released') {
      // the same router in the released APTP layout (hypernet/ + quantizer/)
      const r = loadRouter(path.join(dir, 'router'), { layout });
      saveReferenceRouter(r, dir);
      r.dispose();
      fs.rmSync(path.join(dir, 'router'), { recursive: true });
    }
  }
  const mode = options.experts ?? 'codes';
  // expert folders in both accepted spellings: experts/0/ and experts/expert-1/unet/ …
  if (mode === 'folders') codes.forEach((c, k) => pruneUNetFolder(unetDir, c, path.join(dir, 'experts', k === 0 ? '0' : `expert-${k}`, k === 0 ? '' : 'unet')));
  if (mode === 'vectors') {
    fs.mkdirSync(path.join(dir, 'experts'));
    const rev = [...codes].reverse();
    writeSafetensors(path.join(dir, 'experts', 'arch_vectors.safetensors'), { arch_vectors: { dtype: 'float32', shape: [3, layout.vectorLength], data: new Float32Array(rev.flatMap((c) => [...c])) } });
  }
  return { dir, config, layout, codes };
}

/**
 * Stable-Diffusion-style parts in ONNX: `tokenizer/` (CLIP BPE, pad "!"), `text_encoder/model.onnx` (token table +
 * position table, `input_ids` int32 as Optimum exports it) and `vae_decoder/` (nearest ×2 upsampling + 1×1 conv, 4 → 3).
 */
export function writeSdParts(dir: string, dim: number, seqLen: number): void {
  const merges: [string, string][] = [['c', 'i'], ['ci', 'r'], ['r', 'e'], ['re', 'd</w>']];
  const vocab = vocabFromMerges(merges);
  const tok = path.join(dir, 'tokenizer');
  fs.mkdirSync(tok, { recursive: true });
  fs.writeFileSync(path.join(tok, 'vocab.json'), JSON.stringify(Object.fromEntries(vocab)));
  fs.writeFileSync(path.join(tok, 'merges.txt'), ['#version: 0.2', ...merges.map((m) => m.join(' '))].join('\n') + '\n');
  fs.writeFileSync(path.join(tok, 'tokenizer_config.json'), JSON.stringify({ pad_token: '!', model_max_length: seqLen }));
  const rng = Rng.forKey(3, 'sd-parts');
  const t = new OnnxGraph('text_encoder', { opset: 17 });
  t.input('input_ids', 'int32', ['batch', seqLen]);
  const table = t.initializer('token_embedding', { data: rng.normal(vocab.size * dim), dims: [vocab.size, dim] });
  const pos = t.initializer('position_embedding', { data: rng.normal(seqLen * dim, 0, 0.1), dims: [seqLen, dim] });
  t.op('Add', [t.op('Gather', [table, 'input_ids'], { axis: 0 }), pos], {}, { output: 'last_hidden_state' });
  t.output('last_hidden_state', 'float32', ['batch', seqLen, dim]);
  fs.mkdirSync(path.join(dir, 'text_encoder'));
  fs.writeFileSync(path.join(dir, 'text_encoder', 'model.onnx'), t.toBytes());
  const v = new OnnxGraph('vae_decoder', { opset: 17 });
  v.input('latent_sample', 'float32', ['batch', 4, 'h', 'w']);
  const scales = v.constant({ data: new Float32Array([1, 1, 2, 2]), dims: [4] }, 'scales');
  const up = v.op('Resize', ['latent_sample', '', scales], { mode: 'nearest', nearest_mode: 'floor', coordinate_transformation_mode: 'asymmetric' });
  const w = v.initializer('conv.weight', { data: rng.normal(12, 0, 0.5), dims: [3, 4, 1, 1] });
  const b = v.initializer('conv.bias', { data: rng.normal(3, 0, 0.1), dims: [3] });
  v.op('Conv', [up, w, b], { kernel_shape: [1, 1] }, { output: 'sample' });
  v.output('sample', 'float32', ['batch', 3, 'H', 'W']);
  fs.mkdirSync(path.join(dir, 'vae_decoder'));
  fs.writeFileSync(path.join(dir, 'vae_decoder', 'model.onnx'), v.toBytes());
  fs.writeFileSync(path.join(dir, 'vae_decoder', 'config.json'), JSON.stringify({ scaling_factor: 0.18215, latent_channels: 4, block_out_channels: [4, 8] }));
}
