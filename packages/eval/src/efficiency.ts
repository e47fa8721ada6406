/**
 * Efficiency numbers of the report (APTP.md §4, §8.5 "MACs per UNet call, latency per image"): MACs per prompt via
 * the routed expert, parameters per expert, latency statistics. Pure functions; the MACs table and parameter shapes
 * come from `@aptp/unet-gating` (`macs.ts`, `experts.ts`) and are passed in.
 */
import { InputError } from '@aptp/core';

export interface MacsPerPrompt {
  /** MACs of one UNet call for each prompt's expert, [prompts]. */
  perPrompt: Float64Array;
  meanMacs: number;
  /** Prompts routed to each expert, [experts]. */
  expertCounts: Int32Array;
  /** Mean MACs per category (when categories are given). */
  byCategory?: Record<string, { prompts: number; meanMacs: number }>;
}

/**
 * MACs per prompt: prompt i costs `macsByExpert[routedExpert[i]]` per UNet call. `categories[i]` (optional) groups
 * prompts for the per-category table of the report.
 */
export function macsPerPrompt(routedExpert: ArrayLike<number>, macsByExpert: ArrayLike<number>, categories?: readonly string[]): MacsPerPrompt {
  const n = routedExpert.length;
  if (categories !== undefined && categories.length !== n) {
    throw new InputError('one category per prompt', { field: 'categories', expected: n, found: categories.length });
  }
  const perPrompt = new Float64Array(n);
  const expertCounts = new Int32Array(macsByExpert.length);
  const cat = new Map<string, { prompts: number; sum: number }>();
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const e = routedExpert[i]!;
    if (!Number.isInteger(e) || e < 0 || e >= macsByExpert.length) {
      throw new InputError('routed expert id out of range', { field: `routedExpert[${i}]`, expected: `0..${macsByExpert.length - 1}`, found: e });
    }
    const m = macsByExpert[e]!;
    perPrompt[i] = m;
    expertCounts[e] = expertCounts[e]! + 1;
    sum += m;
    if (categories !== undefined) {
      const c = cat.get(categories[i]!) ?? { prompts: 0, sum: 0 };
      c.prompts++;
      c.sum += m;
      cat.set(categories[i]!, c);
    }
  }
  const out: MacsPerPrompt = { perPrompt, meanMacs: n > 0 ? sum / n : 0, expertCounts };
  if (categories !== undefined) {
    out.byCategory = Object.fromEntries([...cat.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([k, v]) => [k, { prompts: v.prompts, meanMacs: v.sum / v.prompts }]));
  }
  return out;
}

/** Number of parameters of a model given its tensor shapes (e.g. a safetensors header or a pruned expert). */
export function countParams(shapes: Record<string, readonly number[]> | Iterable<readonly number[]>): number {
  const list = Symbol.iterator in Object(shapes) ? [...(shapes as Iterable<readonly number[]>)] : Object.values(shapes as Record<string, readonly number[]>);
  let total = 0;
  for (const s of list) total += s.reduce((a, b) => a * b, 1);
  return total;
}

/** Parameters per expert, from each expert's tensor shapes. */
export function paramsPerExpert(experts: readonly Record<string, readonly number[]>[]): number[] {
  return experts.map((e) => countParams(e));
}

export interface LatencyStats {
  count: number;
  meanMs: number;
  /** Sample standard deviation (n − 1); 0 for one sample. */
  stdMs: number;
  minMs: number;
  p50Ms: number;
  p90Ms: number;
  p95Ms: number;
  p99Ms: number;
  maxMs: number;
}

/** q-quantile (0..1) of sorted values with linear interpolation between order statistics (NumPy's default). */
export function quantileSorted(sorted: ArrayLike<number>, q: number): number {
  const n = sorted.length;
  if (n === 0) return Number.NaN;
  const pos = (n - 1) * Math.min(1, Math.max(0, q));
  const lo = Math.floor(pos);
  const hi = Math.min(n - 1, lo + 1);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

/** Latency summary of per-image timings in milliseconds (warm-up runs should be dropped by the caller). */
export function latencyStats(latenciesMs: ArrayLike<number>): LatencyStats {
  const n = latenciesMs.length;
  if (n === 0) throw new InputError('no latency samples', { field: 'latenciesMs', expected: '>= 1 sample', found: 0 });
  const sorted = Float64Array.from(latenciesMs).sort();
  for (const v of sorted) if (!Number.isFinite(v) || v < 0) throw new InputError('latency must be finite and >= 0', { field: 'latenciesMs', found: v });
  let mean = 0;
  for (const v of sorted) mean += v;
  mean /= n;
  let ss = 0;
  for (const v of sorted) ss += (v - mean) * (v - mean);
  return {
    count: n,
    meanMs: mean,
    stdMs: n > 1 ? Math.sqrt(ss / (n - 1)) : 0,
    minMs: sorted[0]!,
    p50Ms: quantileSorted(sorted, 0.5),
    p90Ms: quantileSorted(sorted, 0.9),
    p95Ms: quantileSorted(sorted, 0.95),
    p99Ms: quantileSorted(sorted, 0.99),
    maxMs: sorted[n - 1]!,
  };
}
