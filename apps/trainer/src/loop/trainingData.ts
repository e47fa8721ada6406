import { InputError } from '@aptp/core';
import {
  createDataLoader,
  openSource,
  resolveTransform,
  type Batch,
  type DataLoader,
  type DataLoaderState,
  type dataLoaderConfigSchema,
  type SkipReport,
  type Source,
} from '@aptp/datasets';
import type { z } from 'zod';

/**
 * The training batches of a stage from any @aptp/datasets config: the source, an endless (epochs = ∞), seeded,
 * resumable `DataLoader` with the configured transform, and the iterator the steps pull from. Its host state (the
 * loader position and skip counts) goes into every checkpoint, so a resumed run continues with the batches an
 * uninterrupted run would have seen. Broken rows are skipped by the loader and counted (`skips()`).
 */
export type TrainingLoaderConfig = Omit<z.output<typeof dataLoaderConfigSchema>, 'batchSize' | 'epochs'>;

export interface TrainingData {
  readonly loader: DataLoader;
  /** The batch of step `step` (the next one of the loader). */
  next(step: number): Promise<Batch>;
  hostState(): { data: DataLoaderState };
  restoreHostState(state: { data?: unknown }): void;
  /** Rows skipped so far (cumulative across resumes). */
  skips(): SkipReport;
  /** Ends the iterator (idempotent). */
  close(): Promise<void>;
}

export interface OpenTrainingDataOptions {
  /** The stage's batch size (the loader config has none). */
  batchSize: number;
  /** Config file, for errors. */
  file?: string;
  /** Aborts a pending read (SIGINT/SIGTERM). */
  signal?: AbortSignal;
}

/** The training batches of a data-set config (opens its source). */
export async function openTrainingData(dataset: unknown, loaderConfig: TrainingLoaderConfig, options: OpenTrainingDataOptions): Promise<TrainingData> {
  return trainingDataFrom(await openSource(dataset, options.file), loaderConfig, options);
}

/** The training batches of an opened source (e.g. the subset routed to one expert). */
export function trainingDataFrom(source: Source, loaderConfig: TrainingLoaderConfig, options: OpenTrainingDataOptions): TrainingData {
  const loader = createDataLoader(source, {
    batchSize: options.batchSize,
    seed: loaderConfig.seed,
    shuffle: loaderConfig.shuffle,
    transform: resolveTransform({ ...loaderConfig, batchSize: options.batchSize, epochs: Infinity }),
    epochs: Infinity,
    dropLast: loaderConfig.dropLast,
    shuffleBuffer: loaderConfig.shuffleBuffer,
    signal: options.signal,
  });
  let it: AsyncIterator<Batch> | null = null;
  return {
    loader,
    async next(step) {
      it ??= loader[Symbol.asyncIterator]();
      const r = await it.next();
      if (r.done) throw new InputError('the data loader ended before the last step (no readable rows?)', { field: 'dataset', found: `step ${step}` });
      return r.value;
    },
    hostState: () => ({ data: loader.state() }),
    restoreHostState(state) {
      if (state.data === undefined || state.data === null) throw new InputError('checkpoint has no data-loader state', { code: 'E_CHECKPOINT', field: 'data' });
      loader.restore(state.data as DataLoaderState);
    },
    skips: () => loader.skips(),
    async close() {
      const cur = it;
      it = null;
      await cur?.return?.(undefined);
    },
  };
}
