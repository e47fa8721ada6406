import { AptpError } from '@aptp/core';

/**
 * A small Prometheus registry (text exposition format 0.0.4) and the server's instruments. Counters, gauges and
 * histograms with fixed label names; gauges may be computed at scrape time (`collect`) so they never drift from the
 * state they describe. Units follow Prometheus: durations in seconds (`_seconds`), sizes as counts.
 */
export type Labels = Record<string, string>;

interface Series<V> {
  labels: Labels;
  value: V;
}

function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

function formatLabels(labels: Labels, names: readonly string[], extra?: [string, string]): string {
  const parts = names.map((n) => `${n}="${escapeLabelValue(labels[n]!)}"`);
  if (extra) parts.push(`${extra[0]}="${escapeLabelValue(extra[1])}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

abstract class Metric<V> {
  protected readonly series = new Map<string, Series<V>>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
  ) {
    if (!NAME.test(name)) throw new AptpError('invalid metric name', { code: 'E_METRIC', field: 'name', found: name });
    for (const l of labelNames) {
      if (!LABEL.test(l) || l.startsWith('__') || l === 'le') throw new AptpError('invalid label name', { code: 'E_METRIC', field: name, found: l });
    }
  }

  abstract readonly type: 'counter' | 'gauge' | 'histogram';

  /** The series for exactly these labels (every label name, nothing else), created on first use. */
  protected get(labels: Labels, init: () => V): Series<V> {
    const keys = Object.keys(labels);
    if (keys.length !== this.labelNames.length || !this.labelNames.every((n) => typeof labels[n] === 'string')) {
      throw new AptpError('wrong label set', { code: 'E_METRIC', field: this.name, expected: this.labelNames, found: keys });
    }
    const key = this.labelNames.map((n) => labels[n]).join('\u0000');
    let s = this.series.get(key);
    if (!s) {
      s = { labels: { ...labels }, value: init() };
      this.series.set(key, s);
    }
    return s;
  }

  abstract renderSamples(): string[];

  render(): string {
    return [`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} ${this.type}`, ...this.renderSamples()].join('\n');
  }
}

export class Counter extends Metric<number> {
  readonly type = 'counter' as const;

  inc(labels: Labels = {}, by = 1): void {
    if (!(by >= 0)) throw new AptpError('a counter only goes up', { code: 'E_METRIC', field: this.name, found: by });
    this.get(labels, () => 0).value += by;
  }

  value(labels: Labels = {}): number {
    return this.get(labels, () => 0).value;
  }

  renderSamples(): string[] {
    return [...this.series.values()].map((s) => `${this.name}${formatLabels(s.labels, this.labelNames)} ${formatValue(s.value)}`);
  }
}

export class Gauge extends Metric<number> {
  readonly type = 'gauge' as const;

  constructor(
    name: string,
    help: string,
    labelNames: readonly string[],
    /** Computes every series at scrape time (replacing set values). */
    private readonly collect?: () => Iterable<[Labels, number]>,
  ) {
    super(name, help, labelNames);
  }

  set(labels: Labels, v: number): void {
    this.get(labels, () => 0).value = v;
  }

  renderSamples(): string[] {
    if (this.collect) {
      this.series.clear();
      for (const [labels, v] of this.collect()) this.set(labels, v);
    }
    return [...this.series.values()].map((s) => `${this.name}${formatLabels(s.labels, this.labelNames)} ${formatValue(s.value)}`);
  }
}

interface HistogramValue {
  /** Non-cumulative counts per bucket; the last entry is the +Inf overflow. */
  counts: number[];
  sum: number;
  count: number;
}

export class Histogram extends Metric<HistogramValue> {
  readonly type = 'histogram' as const;
  readonly buckets: readonly number[];

  constructor(name: string, help: string, labelNames: readonly string[], buckets: readonly number[]) {
    super(name, help, labelNames);
    const sorted = [...new Set(buckets)].filter((b) => Number.isFinite(b)).sort((a, b) => a - b);
    if (sorted.length === 0) throw new AptpError('a histogram needs at least one finite bucket', { code: 'E_METRIC', field: name, found: buckets });
    this.buckets = sorted;
  }

  observe(labels: Labels, v: number): void {
    const s = this.get(labels, () => ({ counts: new Array<number>(this.buckets.length + 1).fill(0), sum: 0, count: 0 }));
    let i = this.buckets.findIndex((b) => v <= b);
    if (i < 0) i = this.buckets.length;
    s.value.counts[i]! += 1;
    s.value.sum += v;
    s.value.count += 1;
  }

  renderSamples(): string[] {
    const lines: string[] = [];
    for (const s of this.series.values()) {
      let cumulative = 0;
      for (let i = 0; i <= this.buckets.length; i++) {
        cumulative += s.value.counts[i]!;
        const le = i < this.buckets.length ? formatValue(this.buckets[i]!) : '+Inf';
        lines.push(`${this.name}_bucket${formatLabels(s.labels, this.labelNames, ['le', le])} ${cumulative}`);
      }
      lines.push(`${this.name}_sum${formatLabels(s.labels, this.labelNames)} ${formatValue(s.value.sum)}`);
      lines.push(`${this.name}_count${formatLabels(s.labels, this.labelNames)} ${s.value.count}`);
    }
    return lines;
  }
}

/** Metrics in registration order; `render()` is the body of `GET /metrics`. */
export class MetricsRegistry {
  private readonly metrics: Metric<unknown>[] = [];

  private add<M extends Metric<unknown>>(m: M): M {
    if (this.metrics.some((x) => x.name === m.name)) throw new AptpError('metric registered twice', { code: 'E_METRIC', field: m.name });
    this.metrics.push(m);
    return m;
  }

  counter(name: string, help: string, labelNames: readonly string[] = []): Counter {
    return this.add(new Counter(name, help, labelNames));
  }

  gauge(name: string, help: string, labelNames: readonly string[] = [], collect?: () => Iterable<[Labels, number]>): Gauge {
    return this.add(new Gauge(name, help, labelNames, collect));
  }

  histogram(name: string, help: string, labelNames: readonly string[], buckets: readonly number[]): Histogram {
    return this.add(new Histogram(name, help, labelNames, buckets));
  }

  render(): string {
    return `${this.metrics.map((m) => m.render()).join('\n')}\n`;
  }
}

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** Latency buckets in seconds: milliseconds (healthz, routing) up to minutes (SD 2.1 at 768 px on a CPU). */
export const LATENCY_BUCKETS_SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600] as const;

/** Batch-size buckets: powers of two up to `maxBatchSize`, and `maxBatchSize` itself. */
export function batchSizeBuckets(maxBatchSize: number): number[] {
  const b: number[] = [];
  for (let v = 1; v < maxBatchSize; v *= 2) b.push(v);
  b.push(maxBatchSize);
  return b;
}

/** What the batcher and the HTTP layer record. Queue depths are gauges the batcher computes at scrape time. */
export interface ServerMetrics {
  registry: MetricsRegistry;
  /** `aptp_http_requests_total{route,method,code}`. */
  httpRequests: Counter;
  /** `aptp_http_request_duration_seconds{route}`: arrival to response end. */
  httpDuration: Histogram;
  /** `aptp_batch_size{expert}`: requests per `generate` call. */
  batchSize: Histogram;
  /** `aptp_batch_duration_seconds{expert}`: one `generate` call. */
  batchDuration: Histogram;
  /** `aptp_queue_wait_seconds{expert}`: acceptance to the start of the request's batch. */
  queueWait: Histogram;
  /** `aptp_route_duration_seconds`: one `route` call. */
  routeDuration: Histogram;
  /** `aptp_images_total{expert}`: images returned by the engine. */
  images: Counter;
  /** `aptp_requests_dropped_total{reason}`: accepted requests that got no image (timeout, cancelled, error). */
  dropped: Counter;
}

export interface QueueState {
  /** Requests waiting to be routed. */
  routing: number;
  /** Requests waiting per expert id (every expert, zeros included). */
  experts: ReadonlyMap<number, number>;
  /** Requests in the `route` or `generate` call that is running now. */
  inFlight: number;
}

export function createServerMetrics(options: { maxBatchSize: number; queueState: () => QueueState }): ServerMetrics {
  const registry = new MetricsRegistry();
  const m: ServerMetrics = {
    registry,
    httpRequests: registry.counter('aptp_http_requests_total', 'HTTP requests answered, by route, method and status code.', ['route', 'method', 'code']),
    httpDuration: registry.histogram('aptp_http_request_duration_seconds', 'Time from request arrival to the end of the response.', ['route'], LATENCY_BUCKETS_SECONDS),
    batchSize: registry.histogram('aptp_batch_size', 'Requests per generate call (one expert per batch).', ['expert'], batchSizeBuckets(options.maxBatchSize)),
    batchDuration: registry.histogram('aptp_batch_duration_seconds', 'Duration of one generate call.', ['expert'], LATENCY_BUCKETS_SECONDS),
    queueWait: registry.histogram('aptp_queue_wait_seconds', 'Time from acceptance to the start of the request\'s batch.', ['expert'], LATENCY_BUCKETS_SECONDS),
    routeDuration: registry.histogram('aptp_route_duration_seconds', 'Duration of one route call.', [], LATENCY_BUCKETS_SECONDS),
    images: registry.counter('aptp_images_total', 'Images generated, by expert.', ['expert']),
    dropped: registry.counter('aptp_requests_dropped_total', 'Accepted image requests that got no image, by reason.', ['reason']),
  };
  for (const reason of ['timeout', 'cancelled', 'queue_full', 'error']) m.dropped.inc({ reason }, 0);
  registry.gauge('aptp_queue_depth', 'Requests waiting for a batch, by expert.', ['expert'], function* () {
    for (const [id, n] of options.queueState().experts) yield [{ expert: String(id) }, n];
  });
  registry.gauge('aptp_routing_queue_depth', 'Requests waiting to be routed.', [], () => [[{}, options.queueState().routing]]);
  registry.gauge('aptp_in_flight_requests', 'Requests inside the running route or generate call.', [], () => [[{}, options.queueState().inFlight]]);
  return m;
}

/** One parsed sample of the text format. */
export interface PrometheusSample {
  name: string;
  labels: Labels;
  value: number;
}

export interface ParsedMetrics {
  /** `# TYPE` per metric family name. */
  types: Map<string, string>;
  help: Map<string, string>;
  samples: PrometheusSample[];
}

/**
 * Parses Prometheus text format 0.0.4 strictly enough for tests and tooling: every line is a comment or
 * `name{labels} value`; throws `AptpError` naming the line otherwise.
 */
export function parsePrometheusText(text: string): ParsedMetrics {
  const types = new Map<string, string>();
  const help = new Map<string, string>();
  const samples: PrometheusSample[] = [];
  const lines = text.split('\n');
  lines.forEach((line, i) => {
    if (line === '') return;
    const bad = (why: string): AptpError => new AptpError(why, { code: 'E_METRIC_TEXT', field: `line ${i + 1}`, found: line });
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
      if (!m) return;
      if (m[1] === 'TYPE') {
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(m[3]!)) throw bad('unknown type');
        if (types.has(m[2]!)) throw bad('TYPE repeated');
        types.set(m[2]!, m[3]!);
      } else help.set(m[2]!, m[3]!);
      return;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw bad('not a sample line');
    const labels: Labels = {};
    if (m[3]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/y;
      let pos = 0;
      while (pos < m[3].length) {
        re.lastIndex = pos;
        const l = re.exec(m[3]);
        if (!l) throw bad('bad label set');
        if (l[1]! in labels) throw bad(`label ${l[1]} repeated`);
        labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_s, c: string) => (c === 'n' ? '\n' : c));
        pos = re.lastIndex;
      }
    }
    const v = m[4] === '+Inf' ? Infinity : m[4] === '-Inf' ? -Infinity : m[4] === 'NaN' ? NaN : Number(m[4]);
    if (Number.isNaN(v) && m[4] !== 'NaN') throw bad('bad value');
    samples.push({ name: m[1]!, labels, value: v });
  });
  return { types, help, samples };
}
