import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as tf from '@tensorflow/tfjs-core';
import { InputError, ShapeError } from '@aptp/core';
import { readUNetConfig } from './config';
import type { UNetConfig } from './config';
import { aptpLayout } from './gates/layout';
import type { ArchitectureLayout } from './gates/layout';
import { createEagerUNet, loadUNet, UNET_FILES } from './unet';
import type { LoadUNetOptions, UNet2DConditionModel } from './unet';
import { safetensorsSource } from './weights';
import type { WeightSource } from './weights';
import { prunedArchitecture, prunedShape, pruneTensor, readPrunedUNet, subBlockIndex, tensorRule } from './prune';
import type { PrunedArchitecture } from './prune';

/**
 * Experts (APTP.md §6, §9): a pruned expert is either a folder of its own (`prune.ts`, the reference's way: K full
 * copies) or — here — built on demand from the **base** weights plus its architecture vector, so K experts cost one
 * copy of the weights plus K vectors of L numbers. Slicing happens lazily, tensor by tensor, while the loader reads.
 */

/** A weight source presenting the expert of `plan` over `base` (removed tensors are absent, others sliced on read). */
export function prunedWeightSource(base: WeightSource, plan: PrunedArchitecture): WeightSource {
  const index = subBlockIndex(plan);
  const keys = base.keys().filter((k) => tensorRule(plan, k, index).op !== 'remove');
  const kept = new Set(keys);
  const missing = (name: string) => new InputError('tensor not in this expert', { code: 'E_TENSOR_MISSING', file: base.file, field: name });
  return {
    file: `${base.file} (expert)`,
    keys: () => [...keys],
    has: (name) => kept.has(name),
    shape: (name) => {
      if (!kept.has(name)) throw missing(name);
      return prunedShape(tensorRule(plan, name, index), name, base.shape(name), base.file)!;
    },
    read: (name) => {
      if (!kept.has(name)) throw missing(name);
      return pruneTensor(plan, name, base.read(name), index, base.file)!;
    },
  };
}

/** The config an expert is built with: the base config without gates (its widths come from the weights). */
export function expertConfig(base: UNetConfig): UNetConfig {
  return {
    ...base,
    downBlockGating: base.downBlockGating.map(() => 'none'),
    midBlockGating: 'none',
    upBlockGating: base.upBlockGating.map(() => 'none'),
    gatedFf: false,
  };
}

export interface SharedExpertsOptions extends Omit<LoadUNetOptions, 'pruned'> {
  /** How many built experts to keep (least recently used ones are disposed). Default 1. */
  maxLoaded?: number;
}

/**
 * K experts sharing one copy of the base weights. `get(k)` builds expert k (or returns the cached one); the returned
 * model is owned by this object (do not dispose it; it is disposed when evicted or by `dispose()`).
 */
export class SharedExperts {
  readonly layout: ArchitectureLayout;
  readonly plans: PrunedArchitecture[];
  readonly config: UNetConfig;
  private readonly loaded = new Map<number, UNet2DConditionModel<tf.Tensor>>();
  private disposed = false;

  constructor(
    readonly base: WeightSource & { close?(): void },
    readonly baseConfig: UNetConfig,
    archVectors: ReadonlyArray<ArrayLike<number>>,
    private readonly options: SharedExpertsOptions = {},
  ) {
    this.layout = aptpLayout(baseConfig);
    this.plans = archVectors.map((row, k) => {
      if (row.length !== this.layout.vectorLength) {
        throw new ShapeError('wrong architecture vector length', { code: 'E_SHAPE', field: `archVectors[${k}]`, expected: this.layout.vectorLength, found: row.length });
      }
      return prunedArchitecture(this.layout, row);
    });
    this.config = expertConfig(baseConfig);
  }

  get count(): number {
    return this.plans.length;
  }

  /** The weight source of expert k (lazy slices of the base). */
  source(k: number): WeightSource {
    return prunedWeightSource(this.base, this.plan(k));
  }

  plan(k: number): PrunedArchitecture {
    const p = this.plans[k];
    if (!p) throw new InputError('no such expert', { code: 'E_INPUT', field: 'expert', expected: `0 … ${this.plans.length - 1}`, found: k });
    return p;
  }

  /** Expert k as an eager tfjs model, built on first use. */
  get(k: number): UNet2DConditionModel<tf.Tensor> {
    if (this.disposed) throw new InputError('shared experts have been disposed', { code: 'E_DISPOSED' });
    const cached = this.loaded.get(k);
    if (cached) {
      this.loaded.delete(k);
      this.loaded.set(k, cached);
      return cached;
    }
    const { maxLoaded = 1, ...loadOptions } = this.options;
    const model = createEagerUNet(this.config, this.source(k), { ...loadOptions, pruned: true });
    this.loaded.set(k, model);
    while (this.loaded.size > Math.max(1, maxLoaded)) {
      const [oldest, m] = this.loaded.entries().next().value as [number, UNet2DConditionModel<tf.Tensor>];
      m.dispose();
      this.loaded.delete(oldest);
    }
    return model;
  }

  /** Disposes every built expert and closes the base weights. Idempotent. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const m of this.loaded.values()) m.dispose();
    this.loaded.clear();
    this.base.close?.();
  }
}

/** Opens a base UNet folder (`config.json` + safetensors) as shared experts for the given architecture vectors. */
export function openSharedExperts(unetDir: string, archVectors: ReadonlyArray<ArrayLike<number>>, options: SharedExpertsOptions = {}): SharedExperts {
  const configFile = path.join(unetDir, UNET_FILES.config);
  const weightsFile = path.join(unetDir, UNET_FILES.weights);
  for (const f of [configFile, weightsFile]) {
    if (!fs.existsSync(f)) throw new InputError('UNet folder is incomplete', { code: 'E_FILE_MISSING', file: f, expected: `${unetDir}/{${UNET_FILES.config}, ${UNET_FILES.weights}}`, found: 'missing' });
  }
  const cfg = readUNetConfig(configFile);
  const base = safetensorsSource(weightsFile);
  try {
    return new SharedExperts(base, cfg, archVectors, options);
  } catch (err) {
    base.close();
    throw err;
  }
}

/** Loads an expert folder written by `pruneUNetFolder` (checks its config against its architecture vector). */
export async function loadExpert(dir: string, options: Omit<LoadUNetOptions, 'pruned'> = {}): Promise<UNet2DConditionModel<tf.Tensor>> {
  readPrunedUNet(dir);
  return loadUNet(dir, { ...options, pruned: true });
}
