import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { InputError, writeJsonAtomic, type ProgressCallback } from '@aptp/core';
import { isSkipped, openSource, parseDatasetConfig, SyntheticWorld, type DatasetConfig } from '@aptp/datasets';
import { loadRouter, type EvalNoise } from '@aptp/router';
import { aptpLayout, readModelUNetConfig } from '@aptp/unet-gating';
import { parsePruneConfig, type PruneConfig } from '../config/reference';
import { RUN_FILES } from '../runDir';
import { createPromptEncoder, PRUNE_FILES, readExperts } from './prune';

/**
 * The routing stage (APTP.md §1.2 item 2 "filtering", §2.5 inference routing): every prompt of a data-set split is
 * routed to an expert with the trained router — the reference's cosine argmax against the stored `embedding_gs`
 * (eval-mode Gumbel noise of the reference, batches of `evalBatchSize` = 2048 rows as `filter_dataset`), or the
 * capacity-balanced assignment of each batch (optimal transport under per-expert capacities ⌈B/K⌉). The mapping is
 * saved as JSON (one expert id per data-set row; −1 for rows the source skips) with per-expert counts and MACs.
 */

export interface RouteOptions {
  /** The prune run folder (config.json, router/, experts.json). */
  pruneRun: string;
  /** Which data-set split (default: the training set of the prune config). */
  split?: 'train' | 'validation';
  /** Rows to route (default: every row of the source). */
  numSamples?: number;
  mode?: 'cosine' | 'balanced';
  noise?: Exclude<EvalNoise, tf.Tensor2D>;
  /** Output file (default `<pruneRun>/routing-<split>.json`). */
  out?: string;
  signal?: AbortSignal;
  onProgress?: ProgressCallback;
}

export interface RoutingMapping {
  pruneRun: string;
  split: string;
  dataset: unknown;
  mode: 'cosine' | 'balanced';
  noise: string;
  numRows: number;
  /** Expert id per data-set row (−1 = skipped row). */
  expert: number[];
  counts: number[];
  experts: Array<{ code: number; count: number; macs: number; macsRatio: number }>;
  /** Mean MACs ratio over the routed prompts (each prompt counted with its expert's MACs). */
  averageMacsRatio: number;
}

/** Reads a prune run's resolved config. */
export function readPruneRunConfig(pruneRun: string): PruneConfig {
  const file = path.join(pruneRun, RUN_FILES.config);
  if (!fs.existsSync(file)) throw new InputError('not a prune run folder (no config.json)', { code: 'E_FILE_MISSING', file });
  return parsePruneConfig(JSON.parse(fs.readFileSync(file, 'utf8')), file);
}

/** The dataset config of a split (synthetic: the same world with `split` set). */
export function datasetForSplit(dataset: DatasetConfig | unknown, split: 'train' | 'validation' | undefined, numSamples?: number): DatasetConfig {
  const d = { ...(dataset as Record<string, unknown>) };
  if (split !== undefined) {
    if (d.format !== 'synthetic' && !('split' in d)) throw new InputError('this data-set format has no split setting; give a dataset config for the split', { field: 'split', found: split });
    d.split = split;
  }
  if (numSamples !== undefined) {
    if (d.format !== 'synthetic') throw new InputError('numSamples applies to the synthetic world only', { field: 'numSamples', found: numSamples });
    d.numSamples = numSamples;
  }
  return parseDatasetConfig(d) as DatasetConfig;
}

/** The captions of every row (`null` for rows the source skips); synthetic prompts are made without rendering. */
async function captionsOf(dataset: DatasetConfig, signal?: AbortSignal): Promise<Array<string | null>> {
  const cfg = parseDatasetConfig(dataset);
  if (cfg.format === 'synthetic') {
    const world = new SyntheticWorld(cfg);
    return Array.from({ length: cfg.numSamples }, (_, i) => world.prompt(cfg.split, i).caption);
  }
  const source = await openSource(cfg);
  const out: Array<string | null> = [];
  if (source.kind === 'indexed') {
    for (let i = 0; i < source.length; i++) {
      if (signal?.aborted) throw new InputError('aborted', { code: 'E_ABORTED' });
      const row = await source.get(i);
      out.push(isSkipped(row) ? null : row.caption);
    }
  } else {
    for (let s = 0; s < source.shards.length; s++) for await (const row of source.readShard(s, signal)) out.push(isSkipped(row) ? null : row.caption);
  }
  return out;
}

export async function runRoute(options: RouteOptions): Promise<{ file: string; mapping: RoutingMapping }> {
  const config = readPruneRunConfig(options.pruneRun);
  const split = options.split ?? 'train';
  const dataset = datasetForSplit(config.data.dataset, options.split, options.numSamples);
  const mode = options.mode ?? 'cosine';
  const noise = options.noise ?? 'reference';
  const layout = aptpLayout(readModelUNetConfig(config.model.pretrainedModelNameOrPath));
  const router = loadRouter(path.join(options.pruneRun, PRUNE_FILES.router), { layout });
  const encoder = await createPromptEncoder(config.model.promptEncoder);
  const info = readExperts(options.pruneRun);
  try {
    const captions = await captionsOf(dataset, options.signal);
    const rows = captions.map((c, i) => [c, i] as const).filter((r): r is readonly [string, number] => r[0] !== null);
    const expert = new Array<number>(captions.length).fill(-1);
    const chunk = router.config.evalBatchSize;
    for (let start = 0; start < rows.length; start += chunk) {
      const part = rows.slice(start, start + chunk);
      const x = await encoder.encode(part.map((r) => r[0]));
      try {
        const r = await router.route(x, { mode, noise });
        part.forEach(([, i], b) => (expert[i] = r.expert[b]!));
      } finally {
        x.dispose();
      }
      options.onProgress?.({ label: 'route', done: Math.min(rows.length, start + chunk), total: rows.length });
    }
    const K = router.numCodes;
    const counts = new Array<number>(K).fill(0);
    for (const e of expert) if (e >= 0) counts[e] = counts[e]! + 1;
    const experts = info.experts.map((e) => ({ code: e.code, count: counts[e.code] ?? 0, macs: e.macs, macsRatio: e.macsRatio }));
    const routed = counts.reduce((a, b) => a + b, 0);
    const averageMacsRatio = routed > 0 ? experts.reduce((a, e) => a + e.count * e.macsRatio, 0) / routed : 0;
    const mapping: RoutingMapping = { pruneRun: path.resolve(options.pruneRun), split, dataset, mode, noise, numRows: captions.length, expert, counts, experts, averageMacsRatio };
    const file = options.out ?? path.join(options.pruneRun, `routing-${split}.json`);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    writeJsonAtomic(file, mapping);
    return { file, mapping };
  } finally {
    router.dispose();
    await encoder.dispose();
  }
}

/** Reads a mapping written by {@link runRoute}. */
export function readRouting(file: string): RoutingMapping {
  if (!fs.existsSync(file)) throw new InputError('routing file not found (run `aptp-trainer route` first)', { code: 'E_FILE_MISSING', file });
  return JSON.parse(fs.readFileSync(file, 'utf8')) as RoutingMapping;
}
