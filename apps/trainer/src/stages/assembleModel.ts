import * as fs from 'node:fs';
import * as path from 'node:path';
import { InputError, writeJsonAtomic } from '@aptp/core';
import { exportUNetFolder, pruneUNetFolder, UNET_FILES } from '@aptp/unet-gating';
import { PRUNE_FILES, readExperts } from './prune';
import { readPruneRunConfig } from './route';

/**
 * Writes the sampler's APTP model folder (apps/sampler README, "The APTP model folder") from the trainer's outputs:
 *
 *   unet/                  the teacher's UNet (config + weights), the full model and the gate layout
 *   scheduler/, conditioning/ (or text_encoder/ + tokenizer/), vae_decoder/   copied from the teacher folder
 *   router/                the prune run's router (config.json + router.safetensors)
 *   prompt_encoder/        the router's prompt encoder: config.json {"_class_name": "SyntheticPromptEncoder", …} or a
 *                          copy of the sentence-transformer folder of the prune config
 *   experts/<k>/           expert k: its fine-tuned folder, or — for a code no training prompt was routed to — the
 *                          teacher's weights sliced to hard(embedding_gs[k]) without fine-tuning (APTP.md §6.1–6.2)
 *   [<part>/onnx/]         with `onnx`, an ONNX export of unet/ and of every expert (the sampler then runs ORT)
 *   model_index.json       the parts and where they came from
 *
 * Without a prune run the folder holds only the teacher (the sampler's `--full`).
 */
export const MODEL_FILES = {
  unet: 'unet',
  router: 'router',
  promptEncoder: 'prompt_encoder',
  experts: 'experts',
  onnx: 'onnx',
  modelIndex: 'model_index.json',
} as const;

/** Teacher-folder parts copied as they are when present (the UNet is copied separately, without its exports). */
const TEACHER_PARTS = ['scheduler', 'conditioning', 'text_encoder', 'tokenizer', 'vae_decoder'] as const;

export interface AssembleModelOptions {
  /** The folder to write (must not exist or be empty). */
  out: string;
  /** The teacher model folder (unet/, scheduler/, text conditioner). */
  teacher: string;
  /** A finished prune run (router/, experts.json, config.json); omit for a teacher-only folder. */
  pruneRun?: string;
  /** Fine-tuned expert UNet folders by code (`<finetune>/expert-<k>/unet`); a missing entry is sliced from the teacher. */
  finetuned?: ReadonlyArray<string | null | undefined>;
  /** Export unet/ and every expert to ONNX (`<part>/onnx/`), so the sampler runs them on ONNX Runtime. */
  onnx?: boolean;
  onNote?: (line: string) => void;
}

export interface AssembledExpert {
  code: number;
  /** `finetuned`: copied from a fine-tuning run; `sliced`: the teacher's weights pruned to the code, not fine-tuned. */
  source: 'finetuned' | 'sliced';
  from: string;
}

export interface AssembledModel {
  dir: string;
  experts: AssembledExpert[];
  onnx: boolean;
}

function copyDir(src: string, dst: string, skip: (name: string) => boolean = () => false): void {
  fs.mkdirSync(dst, { recursive: true });
  for (const e of fs.readdirSync(src, { withFileTypes: true })) {
    if (skip(e.name)) continue;
    const s = path.join(src, e.name);
    const d = path.join(dst, e.name);
    if (e.isDirectory()) copyDir(s, d);
    else fs.copyFileSync(s, d);
  }
}

function requireFiles(dir: string, files: readonly string[], what: string): void {
  const missing = files.filter((f) => !fs.existsSync(path.join(dir, f)));
  if (missing.length > 0) throw new InputError(`${what} is incomplete`, { code: 'E_FILE_MISSING', file: dir, expected: files.join(', '), found: `missing ${missing.join(', ')}` });
}

/** Writes the model folder (see the file comment). */
export function assembleModel(options: AssembleModelOptions): AssembledModel {
  const { out, teacher } = options;
  const note = options.onNote ?? (() => undefined);
  requireFiles(teacher, [path.join(MODEL_FILES.unet, UNET_FILES.config), path.join(MODEL_FILES.unet, UNET_FILES.weights)], 'teacher model folder');
  if (fs.existsSync(out) && fs.readdirSync(out).length > 0) throw new InputError('output folder is not empty', { code: 'E_OUT_EXISTS', file: out, expected: 'a new or empty folder' });
  fs.mkdirSync(out, { recursive: true });

  // 1. the teacher: UNet (without any export of its own: exports are made below), scheduler, text conditioner
  const unetOut = path.join(out, MODEL_FILES.unet);
  copyDir(path.join(teacher, MODEL_FILES.unet), unetOut, (name) => name === MODEL_FILES.onnx);
  for (const part of TEACHER_PARTS) if (fs.existsSync(path.join(teacher, part))) copyDir(path.join(teacher, part), path.join(out, part));

  // 2. router, prompt encoder, experts
  const experts: AssembledExpert[] = [];
  let router: Record<string, unknown> | null = null;
  if (options.pruneRun) {
    const pruneRun = options.pruneRun;
    requireFiles(pruneRun, [path.join(PRUNE_FILES.router, 'config.json'), PRUNE_FILES.experts], 'prune run');
    const config = readPruneRunConfig(pruneRun);
    copyDir(path.join(pruneRun, PRUNE_FILES.router), path.join(out, MODEL_FILES.router));
    const enc = config.model.promptEncoder;
    const encOut = path.join(out, MODEL_FILES.promptEncoder);
    if (enc.type === 'synthetic') writeJsonAtomic(path.join(encOut, 'config.json'), { _class_name: 'SyntheticPromptEncoder', dim: enc.dim, seed: enc.seed });
    else copyDir(enc.path, encOut);
    const info = readExperts(pruneRun);
    for (const code of info.experts) {
      const k = code.code;
      const dst = path.join(out, MODEL_FILES.experts, String(k));
      const tuned = options.finetuned?.[k];
      if (tuned) {
        requireFiles(tuned, [UNET_FILES.config, UNET_FILES.weights], `fine-tuned expert ${k}`);
        copyDir(tuned, dst, (name) => name === MODEL_FILES.onnx);
        experts.push({ code: k, source: 'finetuned', from: path.resolve(tuned) });
      } else {
        pruneUNetFolder(path.join(teacher, MODEL_FILES.unet), code.archVector, dst);
        experts.push({ code: k, source: 'sliced', from: path.resolve(teacher, MODEL_FILES.unet) });
        note(`expert ${k}: no fine-tuned weights; sliced from the teacher (hard(embedding_gs[${k}]), not fine-tuned)`);
      }
    }
    router = { pruneRun: path.resolve(pruneRun), baseline: info.baseline, numCodes: info.experts.length, promptEncoder: enc };
  }

  // 3. ONNX exports (the sampler's `auto` engine picks them up)
  const onnx = options.onnx ?? false;
  if (onnx) {
    exportUNetFolder(unetOut, path.join(unetOut, MODEL_FILES.onnx));
    for (const e of experts) {
      const dir = path.join(out, MODEL_FILES.experts, String(e.code));
      exportUNetFolder(dir, path.join(dir, MODEL_FILES.onnx));
    }
  }

  writeJsonAtomic(path.join(out, MODEL_FILES.modelIndex), {
    ...(fs.existsSync(path.join(teacher, MODEL_FILES.modelIndex)) ? (JSON.parse(fs.readFileSync(path.join(teacher, MODEL_FILES.modelIndex), 'utf8')) as Record<string, unknown>) : {}),
    _aptp: { teacher: path.resolve(teacher), router, experts, onnx },
  });
  return { dir: out, experts, onnx };
}
