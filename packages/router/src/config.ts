import { z } from 'zod';
import { ConfigError } from '@aptp/core';

/**
 * Router configuration (camelCase, our files; the reference's snake_case `hypernet/config.json` and
 * `quantizer/config.json` are mapped in `io/reference.ts`). Defaults are the reference values (APTP.md §1.3, §2),
 * written once here.
 */
export const SD21_DEPTH_ORDER = [-1, -2, 0, 1, -3, -4, 2, 3, -5, -6, 4, 5, -7, 6] as const;

export const routerConfigSchema = z.strictObject({
  inputDim: z.number().int().positive().default(768).describe('prompt-embedding width; hypernet input_dim (all-mpnet-base-v2 hidden size 768), APTP.md §2.1–2.2'),
  numCodes: z.number().int().positive().default(8).describe('K architecture codes / experts; model.quantizer.num_arch_vq_codebook_embeddings (8; HF Base-CC3M 16), APTP.md §1.3'),
  temperature: z.number().positive().default(0.4).describe('Gumbel-sigmoid temperature; model.quantizer.quantizer_T, APTP.md §2.4'),
  base: z.number().default(3).describe('Gumbel-sigmoid logit offset; model.quantizer.quantizer_base, APTP.md §2.4'),
  depthOrder: z.array(z.number().int()).default([...SD21_DEPTH_ORDER]).describe('depth-gate priority order; model.quantizer.depth_order, APTP.md §2.4'),
  nonZeroWidth: z.boolean().default(true).describe('keep ≥1 element per width gate; model.quantizer.non_zero_width, APTP.md §2.4'),
  optimalTransport: z.boolean().default(true).describe('Sinkhorn routing in training (else cosine argmax); model.quantizer.optimal_transport, APTP.md §2.5'),
  sinkhornEpsilon: z.number().positive().default(0.05).describe('SwAV Sinkhorn ε; quantizer sinkhorn_epsilon (class default), APTP.md §2.5'),
  sinkhornIterations: z.number().int().nonnegative().default(3).describe('SwAV Sinkhorn iterations; quantizer sinkhorn_iterations (class default), APTP.md §2.5'),
  linearBias: z.boolean().default(true).describe('predictor heads have a bias; model.hypernet.linear_bias, APTP.md §1.3'),
  singleArchParam: z.boolean().default(false).describe('single-architecture baseline (one learnable vector); model.hypernet.single_arch_param, APTP.md §1.7'),
  evalBatchSize: z.number().int().positive().default(2048).describe('rows per eval-routing batch: the eval Gumbel noise depends on the row position (filter_dataset batch 2048), APTP.md §1.2, §2.4'),
});

export type RouterConfig = z.output<typeof routerConfigSchema>;
export type RouterConfigInput = z.input<typeof routerConfigSchema>;

/** Validates a router config (unknown keys and bad values are `ConfigError`s naming the field). */
export function parseRouterConfig(json: unknown, file = 'router/config.json'): RouterConfig {
  const r = routerConfigSchema.safeParse(json ?? {});
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const field = issue.path.join('.') || (issue.code === 'unrecognized_keys' ? (issue as { keys?: string[] }).keys?.join(', ') : '') || '(root)';
    throw new ConfigError(issue.message, { code: 'E_CONFIG_FIELD', file, field, cause: r.error });
  }
  return r.data;
}

/** The Gumbel-sigmoid options of a config. */
export function gumbelOptions(cfg: RouterConfig): { temperature: number; base: number; nonZeroWidth: boolean; depthOrder: readonly number[] } {
  return { temperature: cfg.temperature, base: cfg.base, nonZeroWidth: cfg.nonZeroWidth, depthOrder: cfg.depthOrder };
}
