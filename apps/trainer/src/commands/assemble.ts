import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { Command, ConfigError } from '@aptp/core';
import { assembleModel } from '../stages/assembleModel';
import { readExperts } from '../stages/prune';
import { readPruneRunConfig } from '../stages/route';

/**
 * `assemble`: writes the sampler's APTP model folder from a prune run and its fine-tuned experts (after
 * `prune → route → finetune`), so `aptp-sampler sample --model-dir <out>` runs them.
 */
const schema = z.strictObject({
  prune: z.string().optional().describe('the prune run folder (router/, experts.json); omit for a teacher-only folder'),
  finetune: z.string().optional().describe('the folder of the expert runs (<finetune>/expert-<k>/unet); experts without one are sliced from the teacher'),
  teacher: z.string().optional().describe("teacher model folder (default: the prune run's)"),
  out: z.string().optional().describe('model folder to write (new or empty; required)'),
  onnx: z.boolean().default(false).describe('also export unet/ and every expert to ONNX (the sampler then runs ONNX Runtime)'),
});

export const assembleCommand: Command<typeof schema> = {
  name: 'assemble',
  summary: "write the sampler's APTP model folder (teacher UNet, router, prompt encoder, experts) from prune + finetune runs",
  schema,
  async run(args, ctx) {
    if (!args.out) throw new ConfigError('an output folder is required', { code: 'E_CONFIG_FIELD', field: '--out' });
    const teacher = args.teacher ?? (args.prune ? readPruneRunConfig(args.prune).model.pretrainedModelNameOrPath : undefined);
    if (!teacher) throw new ConfigError('give --teacher (or --prune, whose config names it)', { code: 'E_CONFIG_FIELD', field: '--teacher' });
    const finetuned = args.prune
      ? readExperts(args.prune).experts.map((e) => {
          const d = args.finetune ? path.join(args.finetune, `expert-${e.code}`, 'unet') : null;
          return d && fs.existsSync(path.join(d, 'config.json')) ? d : null;
        })
      : [];
    const m = assembleModel({ out: args.out, teacher, pruneRun: args.prune, finetuned, onnx: args.onnx, onNote: (l) => ctx.err.write(`${l}\n`) });
    for (const e of m.experts) ctx.out.write(`  expert ${e.code}: ${e.source} (${e.from})\n`);
    ctx.out.write(`${path.resolve(m.dir)}\n`);
    return 0;
  },
};
