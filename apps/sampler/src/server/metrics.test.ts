import { AptpError } from '@aptp/core';
import { batchSizeBuckets, MetricsRegistry, parsePrometheusText } from './metrics';

describe('MetricsRegistry (Prometheus text 0.0.4)', () => {
  it('renders counters, gauges and histograms that parse back to the recorded values', () => {
    const r = new MetricsRegistry();
    const c = r.counter('x_requests_total', 'requests', ['route', 'code']);
    c.inc({ route: '/a', code: '200' });
    c.inc({ route: '/a', code: '200' }, 2);
    c.inc({ route: '/b', code: '404' });
    let depth = 3;
    r.gauge('x_depth', 'queue depth', ['expert'], () => [[{ expert: '0' }, depth], [{ expert: '1' }, 0]]);
    const h = r.histogram('x_seconds', 'latency', ['expert'], [5, 1, 2]); // unsorted on purpose
    for (const v of [0.5, 1, 3, 100]) h.observe({ expert: '0' }, v);

    const p = parsePrometheusText(r.render());
    expect(p.types).toEqual(new Map([['x_requests_total', 'counter'], ['x_depth', 'gauge'], ['x_seconds', 'histogram']]));
    expect(p.help.get('x_depth')).toBe('queue depth');
    const get = (name: string, labels: Record<string, string>): number | undefined =>
      p.samples.find((s) => s.name === name && JSON.stringify(s.labels) === JSON.stringify(labels))?.value;
    expect(get('x_requests_total', { route: '/a', code: '200' })).toBe(3);
    expect(get('x_requests_total', { route: '/b', code: '404' })).toBe(1);
    expect(get('x_depth', { expert: '0' })).toBe(3);
    expect(get('x_depth', { expert: '1' })).toBe(0);
    // le is inclusive; buckets are cumulative; +Inf equals _count
    expect(get('x_seconds_bucket', { expert: '0', le: '1' })).toBe(2);
    expect(get('x_seconds_bucket', { expert: '0', le: '2' })).toBe(2);
    expect(get('x_seconds_bucket', { expert: '0', le: '5' })).toBe(3);
    expect(get('x_seconds_bucket', { expert: '0', le: '+Inf' })).toBe(4);
    expect(get('x_seconds_count', { expert: '0' })).toBe(4);
    expect(get('x_seconds_sum', { expert: '0' })).toBe(104.5);

    depth = 7; // collected gauges are computed at scrape time
    expect(parsePrometheusText(r.render()).samples.find((s) => s.name === 'x_depth' && s.labels.expert === '0')?.value).toBe(7);
  });

  it('escapes label values and help text so they parse back unchanged', () => {
    const r = new MetricsRegistry();
    const nasty = 'a "quoted" \\ back\nslash';
    r.counter('x_total', 'help with \\ and\nnewline', ['v']).inc({ v: nasty });
    const text = r.render();
    expect(text.split('\n').filter((l) => l.startsWith('x_total'))).toHaveLength(1);
    expect(parsePrometheusText(text).samples[0]!.labels.v).toBe(nasty);
  });

  it('rejects wrong label sets, negative counter steps, bad names and double registration', () => {
    const r = new MetricsRegistry();
    const c = r.counter('x_total', 'x', ['a']);
    expect(() => c.inc({})).toThrow(AptpError);
    expect(() => c.inc({ a: '1', b: '2' })).toThrow(/wrong label set/);
    expect(() => c.inc({ a: '1' }, -1)).toThrow(/only goes up/);
    expect(() => r.counter('x_total', 'again')).toThrow(/registered twice/);
    expect(() => r.counter('bad-name', 'x')).toThrow(/invalid metric name/);
    expect(() => r.histogram('h', 'x', ['le'], [1])).toThrow(/invalid label name/);
  });

  it('batch-size buckets are powers of two up to the max batch size, which is always a bucket', () => {
    expect(batchSizeBuckets(1)).toEqual([1]);
    expect(batchSizeBuckets(8)).toEqual([1, 2, 4, 8]);
    expect(batchSizeBuckets(6)).toEqual([1, 2, 4, 6]);
  });

  it('the parser rejects malformed sample lines and names the line', () => {
    expect(() => parsePrometheusText('x_total{a="1"} 1\nx_total{a=1} 2\n')).toThrow(/line 2/);
    expect(() => parsePrometheusText('x_total one\n')).toThrow(/bad value/);
  });
});
