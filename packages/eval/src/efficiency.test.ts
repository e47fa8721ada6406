import { countParams, latencyStats, macsPerPrompt, paramsPerExpert, quantileSorted } from './efficiency';

describe('efficiency', () => {
  test('MACs per prompt follow the routed expert; per-category means and expert counts', () => {
    const table = [1384.2e9, 1182.8e9, 916.3e9];
    const r = macsPerPrompt([0, 2, 2, 1], table, ['people', 'art', 'art', 'city']);
    expect(Array.from(r.perPrompt)).toEqual([table[0], table[2], table[2], table[1]]);
    expect(r.meanMacs).toBeCloseTo((table[0]! + 2 * table[2]! + table[1]!) / 4, 0);
    expect(Array.from(r.expertCounts)).toEqual([1, 1, 2]);
    expect(r.byCategory).toEqual({ art: { prompts: 2, meanMacs: table[2] }, city: { prompts: 1, meanMacs: table[1] }, people: { prompts: 1, meanMacs: table[0] } });
    expect(() => macsPerPrompt([3], table)).toThrow(/routedExpert\[0\]: routed expert id out of range: expected 0\.\.2, found 3/);
  });

  test('parameters from tensor shapes', () => {
    const a = { 'conv_in.weight': [320, 4, 3, 3], 'conv_in.bias': [320] };
    expect(countParams(a)).toBe(320 * 36 + 320);
    expect(countParams([[2, 3], [4]])).toBe(10);
    expect(paramsPerExpert([a, { w: [5, 5] }])).toEqual([11840, 25]);
  });

  test('latency statistics: NumPy-style linear quantiles, sample std', () => {
    const s = latencyStats([40, 10, 30, 20]);
    expect(s).toMatchObject({ count: 4, meanMs: 25, minMs: 10, maxMs: 40, p50Ms: 25 });
    expect(s.p90Ms).toBeCloseTo(37, 10); // position 0.9·3 = 2.7 → 30 + 0.7·10
    expect(s.stdMs).toBeCloseTo(Math.sqrt(500 / 3), 12);
    expect(quantileSorted([1, 2], 0)).toBe(1);
    expect(latencyStats([7]).stdMs).toBe(0);
    expect(() => latencyStats([])).toThrow(/no latency samples/);
  });
});
