import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ConfigError, InputError } from '@aptp/core';
import { metricsLine, readMetrics, RunDir } from './runDir';

describe('RunDir', () => {
  let root: string;
  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'aptp-run-'));
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  it('creates runs/<name>-<timestamp>/ with config.json, never reusing a folder', () => {
    const now = new Date('2025-02-11T09:08:07.654Z');
    const a = RunDir.create({ root, name: 'prune', config: { lossWeights: { resource: 2 } }, now });
    const b = RunDir.create({ root, name: 'prune', now });
    expect(path.basename(a.dir)).toBe('prune-2025-02-11T09-08-07');
    expect(path.basename(b.dir)).toBe('prune-2025-02-11T09-08-07-2');
    expect(JSON.parse(fs.readFileSync(path.join(a.dir, 'config.json'), 'utf8'))).toEqual({ lossWeights: { resource: 2 } });
    expect(fs.existsSync(a.metricsFile)).toBe(true);
    a.close();
    b.close();
    expect(() => RunDir.create({ root, name: 'bad/name' })).toThrow(ConfigError);
  });

  it('--out uses the folder as is, but refuses one that already holds a run', () => {
    const out = path.join(root, 'my', 'run');
    const r = RunDir.create({ name: 'x', out, config: { a: 1 } });
    expect(r.dir).toBe(out);
    r.close();
    expect(() => RunDir.create({ name: 'x', out })).toThrow(/--out: run folder already holds a run; pass --resume/);
  });

  it('appends one JSON line per record, keeping NaN/Infinity visible, and survives a torn last line', () => {
    const r = RunDir.create({ root, name: 'm' });
    r.appendMetrics({ step: 1, loss: 0.5, usage: [1, 2] });
    r.appendMetrics({ step: 2, loss: NaN, ratio: -Infinity });
    // visible to a reader while the run is still going (no buffering in the process)
    expect(fs.readFileSync(r.metricsFile, 'utf8')).toBe('{"step":1,"loss":0.5,"usage":[1,2]}\n{"step":2,"loss":"NaN","ratio":"-Infinity"}\n');
    fs.appendFileSync(r.metricsFile, '{"step":3,"lo');
    expect(readMetrics(r.metricsFile).map((x) => x.step)).toEqual([1, 2]);
    r.close();
    r.close();
    expect(() => r.appendMetrics({ step: 4 })).toThrow(InputError);
    fs.writeFileSync(r.metricsFile, '{"step":1}\nnot json\n{"step":3}\n');
    expect(() => readMetrics(r.metricsFile)).toThrow(/metrics\.jsonl: line 2: metrics line is not valid JSON/);
  });

  it('reopening to resume drops records after the resume step and keeps appending', () => {
    const r = RunDir.create({ root, name: 'resume' });
    for (let s = 1; s <= 7; s++) r.appendMetrics({ step: s, loss: s / 10 });
    r.close();
    fs.appendFileSync(r.metricsFile, '{"step":8,');
    const again = RunDir.open(r.dir, { resumeStep: 6, config: { resumed: true } });
    again.appendMetrics({ step: 7, loss: 0.75 });
    again.close();
    expect(readMetrics(r.metricsFile).map((x) => [x.step, x.loss])).toEqual([[1, 0.1], [2, 0.2], [3, 0.3], [4, 0.4], [5, 0.5], [6, 0.6], [7, 0.75]]);
    expect(JSON.parse(fs.readFileSync(path.join(r.dir, 'config.json'), 'utf8'))).toEqual({ resumed: true });
    expect(() => RunDir.open(path.join(root, 'missing'))).toThrow(/missing: run folder does not exist/);
  });

  it('metricsLine is one line of JSON', () => {
    expect(metricsLine({ step: 1, note: 'a\nb', x: Infinity })).toBe('{"step":1,"note":"a\\nb","x":"Infinity"}');
  });
});
