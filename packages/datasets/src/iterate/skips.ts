import type { SkipReason, SkippedSample } from '../source';

/**
 * Counts of skipped rows by reason plus the first few of them, so a run can report "412 images skipped
 * (truncatedImage: 3, missingImage: 409), e.g. training/17_2841 …" instead of crashing or silently shrinking.
 * Plain JSON, so it can live in an iterator checkpoint.
 */
export interface SkipReport {
  total: number;
  byReason: Partial<Record<SkipReason, number>>;
  /** The first `exampleLimit` skipped rows, in the order they were met. */
  examples: SkippedSample[];
}

export class SkipLog {
  private report: SkipReport = { total: 0, byReason: {}, examples: [] };

  constructor(readonly exampleLimit = 10) {}

  add(s: SkippedSample): void {
    this.report.total++;
    this.report.byReason[s.skip] = (this.report.byReason[s.skip] ?? 0) + 1;
    if (this.report.examples.length < this.exampleLimit) this.report.examples.push({ ...s });
  }

  get total(): number {
    return this.report.total;
  }

  snapshot(): SkipReport {
    return { total: this.report.total, byReason: { ...this.report.byReason }, examples: this.report.examples.map((e) => ({ ...e })) };
  }

  restore(r: SkipReport): void {
    this.report = { total: r.total, byReason: { ...r.byReason }, examples: r.examples.map((e) => ({ ...e })) };
  }
}

/** One line for logs: `3 skipped (truncatedImage 1, emptyFile 2); first: a.jpg (truncatedImage), …`. */
export function formatSkipReport(r: SkipReport, maxExamples = 5): string {
  if (r.total === 0) return '0 skipped';
  const reasons = Object.entries(r.byReason)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  const ex = r.examples
    .slice(0, maxExamples)
    .map((e) => `${e.file} (${e.skip})`)
    .join(', ');
  return `${r.total} skipped (${reasons}); first: ${ex}`;
}
