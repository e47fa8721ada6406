import { z } from 'zod';
import { Command, ProgressBar } from '@aptp/core';
import { initBackend } from '@aptp/core';
import { runRoute } from '../stages/route';

/** `route`: assign every prompt of a split to an expert with the trained router and save the mapping (JSON). */
export const routeCommandSchema = z.strictObject({
  prune: z.string().describe('the prune run folder (config.json, router/, experts.json)'),
  split: z.enum(['train', 'validation']).default('train').describe('data-set split to route (the prune config\'s data set)'),
  numSamples: z.coerce.number().int().min(1).optional().describe('rows to route (synthetic world; default: the config\'s numSamples)'),
  mode: z.enum(['cosine', 'balanced']).default('cosine').describe('cosine = reference argmax (APTP.md §2.5); balanced = capacity-constrained OT per batch'),
  noise: z.enum(['reference', 'none']).default('reference').describe('prompt-side Gumbel noise: the reference eval stream, or none'),
  out: z.string().optional().describe('mapping file (default <prune>/routing-<split>.json)'),
  backend: z.string().optional().describe('tensor backend: tfjs-node-gpu | tfjs-node | wasm | cpu (env APTP_BACKEND)'),
});

export const routeCommand: Command<typeof routeCommandSchema> = {
  name: 'route',
  summary: 'route every prompt of a split to an expert; save the mapping and print per-expert counts and MACs',
  schema: routeCommandSchema,
  async run(args, ctx) {
    await initBackend({ backend: args.backend });
    const bar = new ProgressBar(ctx.err);
    const { file, mapping } = await runRoute({ pruneRun: args.prune, split: args.split, numSamples: args.numSamples, mode: args.mode, noise: args.noise, out: args.out, signal: ctx.signal, onProgress: bar.update });
    const routed = mapping.counts.reduce((a, b) => a + b, 0);
    ctx.out.write(`routed ${routed} of ${mapping.numRows} prompts (${mapping.split}, ${mapping.mode})\n`);
    for (const e of mapping.experts) {
      ctx.out.write(`  expert ${e.code}: ${String(e.count).padStart(6)} prompts (${((100 * e.count) / Math.max(1, routed)).toFixed(1)} %), MACs ${(e.macs / 1e6).toFixed(2)} M (ratio ${e.macsRatio.toFixed(3)})\n`);
    }
    ctx.out.write(`average MACs ratio per prompt: ${mapping.averageMacsRatio.toFixed(3)}\n${file}\n`);
    return 0;
  },
};
