import { Writable } from 'node:stream';
import { runProgram } from '@aptp/core';
import { trainerProgram } from './program';

function sink(): { stream: Writable; text: () => string } {
  let buf = '';
  return { stream: new Writable({ write(c, _e, cb) { buf += c.toString(); cb(); } }), text: () => buf };
}

describe('aptp-trainer CLI', () => {
  it('lists its commands and prints help for each', async () => {
    const o = sink();
    expect(await runProgram(trainerProgram, ['--help'], { out: o.stream })).toBe(0);
    for (const c of trainerProgram.commands) {
      expect(o.text()).toContain(c.name);
      const h = sink();
      expect(await runProgram(trainerProgram, [c.name, '--help'], { out: h.stream })).toBe(0);
      expect(h.text()).toMatch(new RegExp(`Usage: aptp-trainer ${c.name}`));
    }
  });

  it('env reports the backend it chose', async () => {
    const o = sink();
    expect(await runProgram(trainerProgram, ['env', '--backend', 'cpu'], { out: o.stream })).toBe(0);
    expect(o.text()).toMatch(/^backend cpu\n/);
    const e = sink();
    expect(await runProgram(trainerProgram, ['env', '--backend', 'tfjs-node'], { out: o.stream, err: e.stream })).toBe(3);
    expect(e.text()).toMatch(/backend "tfjs-node" could not be initialised/);
  });
});
