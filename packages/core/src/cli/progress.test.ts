import { Writable } from 'node:stream';
import { ProgressBar } from './progress';
import type { Progress } from './progress';

function sink(): { stream: Writable; lines: () => string[] } {
  let buf = '';
  return { stream: new Writable({ write(c, _e, cb) { buf += c.toString(); cb(); } }), lines: () => buf.trim().split('\n') };
}

/** A fake clock in ms, advanced by hand. */
function clock(): { now: () => number; set: (ms: number) => void } {
  let t = 0;
  return { now: () => t, set: (ms) => { t = ms; } };
}

describe('ProgressBar rate and ETA', () => {
  // A run resumed at step 1000 of 6000 whose steps take 3.3 s each: the old bar extrapolated the total as if the
  // first 1000 steps had taken the elapsed time and printed "1002/6000  17% 6.6s<32.9s".
  const resumed = (bar: ProgressBar, c: ReturnType<typeof clock>) => {
    c.set(3300);
    bar.update({ label: 'train', done: 1001, total: 6000 });
    c.set(6600);
    bar.update({ label: 'train', done: 1002, total: 6000 });
  };

  it('counts only the steps done since the first update (resumed run, no startAt)', () => {
    const out = sink();
    const c = clock();
    resumed(new ProgressBar(out.stream, { intervalMs: 0, now: c.now }), c);
    // rate = 1 step / 3.3 s from the first update on; remaining 4998 steps -> 16493 s = 4h34m
    expect(out.lines()).toEqual(['train: 1001/6000  17% 3.3s<?', 'train: 1002/6000  17% 6.6s<4h34m']);
  });

  it('with startAt counts from the bar creation: 2 steps in 6.6 s', () => {
    const out = sink();
    const c = clock();
    resumed(new ProgressBar(out.stream, { intervalMs: 0, now: c.now, startAt: 1000 }), c);
    // 4999 · 3.3 = 16497 s and 4998 · 3.3 = 16493 s, both 4h34m
    expect(out.lines()).toEqual(['train: 1001/6000  17% 3.3s<4h34m', 'train: 1002/6000  17% 6.6s<4h34m']);
  });

  it('startAt 0 is the plain extrapolation of a fresh run', () => {
    const out = sink();
    const c = clock();
    const bar = new ProgressBar(out.stream, { intervalMs: 0, now: c.now, startAt: 0 });
    c.set(1000);
    bar.update({ label: 'train', done: 10, total: 100 });
    c.set(61000);
    bar.update({ label: 'train', done: 25, total: 100 });
    // 10 in 1 s -> 90 left = 9 s; 25 in 61 s -> 75 · 2.44 s = 183 s = 3m03s
    expect(out.lines()).toEqual(['train: 10/100  10% 1.0s<9.0s', 'train: 25/100  25% 1m01s<3m03s']);
  });

  it("shows the producer's etaSec (the training loop's own estimate) instead of its own", () => {
    const out = sink();
    const c = clock();
    const bar = new ProgressBar(out.stream, { intervalMs: 0, now: c.now, startAt: 0 });
    c.set(1000);
    const p: Progress = { label: 'prune', done: 10, total: 100, etaSec: 12.5, info: { 'it/s': 7.2 } };
    bar.update(p);
    expect(out.lines()).toEqual(['prune: 10/100  10% 1.0s<12.5s it/s=7.2000']);
  });

  it('restarts the measurement for every new label', () => {
    const out = sink();
    const c = clock();
    const bar = new ProgressBar(out.stream, { intervalMs: 0, now: c.now, startAt: 0 });
    c.set(2000);
    bar.update({ label: 'expert 0', done: 4, total: 4 });
    c.set(3000);
    bar.update({ label: 'expert 1', done: 1, total: 4 });
    c.set(5000);
    bar.update({ label: 'expert 1', done: 3, total: 4 });
    // expert 0: 4 in 2 s, done; expert 1 measured from its first update: 2 in 2 s -> 1 left = 1 s
    expect(out.lines()).toEqual(['expert 0: 4/4 100% 2.0s<0.0s', 'expert 1: 1/4  25% 3.0s<?', 'expert 1: 3/4  75% 5.0s<1.0s']);
  });
});
