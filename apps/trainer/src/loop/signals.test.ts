import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { z } from 'zod';
import { Command, ProgressBar, Program, runProgram } from '@aptp/core';
import { LATEST_POINTER } from '../checkpoint';
import { readMetrics } from '../runDir';
import { formatSummary, runTraining } from './runTraining';
import { startRun } from './startRun';
import { ToyRegression } from './__fixtures__/toyRegression';

/**
 * The CLI side of signals: core's `runProgram` turns SIGINT/SIGTERM into `ctx.signal`; a training command built on
 * `startRun` + `runTraining` saves and returns, and the process exit code is 130/143. Signals are delivered with
 * `process.emit` (the same listeners a real signal reaches) so the test runs in-process.
 */
function sink(): { stream: Writable; text: () => string } {
  let buf = '';
  return { stream: new Writable({ write(c, _e, cb) { buf += c.toString(); cb(); } }), text: () => buf };
}

const schema = z.strictObject({
  out: z.string().describe('run folder'),
  steps: z.coerce.number().int().default(8).describe('steps'),
  resume: z.boolean().default(false).describe('continue the run in --out'),
  signalAt: z.coerce.number().int().default(-1).describe('emit the signal during this step'),
  signal: z.enum(['SIGINT', 'SIGTERM']).default('SIGTERM').describe('which signal'),
  nanAt: z.coerce.number().int().default(-1).describe('NaN inputs at this step'),
  deferSignal: z.boolean().default(false).describe('deliver the signal from a macrotask, as the OS does, not synchronously'),
});

const toyCommand: Command<typeof schema> = {
  name: 'toy',
  summary: 'toy training run',
  schema,
  async run(args, ctx) {
    const { run, checkpoint, notes } = startRun({ name: 'toy', out: args.out, resume: args.resume || undefined, config: { steps: args.steps } });
    for (const n of notes) ctx.err.write(`${n}\n`);
    const toy = new ToyRegression({ nanAtStep: args.nanAt });
    const bar = new ProgressBar(ctx.err, { intervalMs: 0 });
    try {
      const summary = await runTraining({
        label: 'toy',
        steps: args.steps,
        saveEvery: 100,
        step: (i) => {
          const m = toy.step(i);
          if (i === args.signalAt) {
            if (args.deferSignal) setImmediate(() => process.emit(args.signal, args.signal));
            else process.emit(args.signal, args.signal);
          }
          return m;
        },
        target: toy.target,
        run,
        resume: checkpoint,
        signal: ctx.signal,
        onProgress: bar.update,
        config: { steps: args.steps },
      });
      ctx.out.write(formatSummary(summary));
      return 0;
    } finally {
      run.close();
      toy.dispose();
    }
  },
};
const program: Program = { name: 'aptp-toy', summary: 'test program', commands: [toyCommand] };

describe('signals → AbortSignal → save → exit code', () => {
  let root: string;
  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'aptp-signal-'));
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  it.each([
    ['SIGTERM', 143],
    ['SIGINT', 130],
  ])('%s during step 3 saves checkpoint-3 and exits %i; --resume finishes the run', async (signal, code) => {
    const out = path.join(root, 'run');
    const o = sink();
    const e = sink();
    expect(await runProgram(program, ['toy', '--out', out, '--signal-at', '2', '--signal', signal], { out: o.stream, err: e.stream })).toBe(code);
    expect(e.text()).toContain(`aptp-toy: ${signal} received, stopping after saving...`);
    expect(e.text()).toMatch(/toy: 3\/8 +38% .* loss=\S+ .*it\/s=\S+ eta=/);
    expect(o.text()).toMatch(/^toy: aborted at step 3\/8/);
    expect(o.text()).toContain(`run folder: ${out}`);
    expect(fs.readFileSync(path.join(out, LATEST_POINTER), 'utf8').trim()).toBe('checkpoint-3');
    expect(process.listenerCount('SIGTERM') + process.listenerCount('SIGINT')).toBe(0);

    const o2 = sink();
    const e2 = sink();
    expect(await runProgram(program, ['toy', '--out', out, '--resume'], { out: o2.stream, err: e2.stream })).toBe(0);
    expect(e2.text()).toContain('resuming from checkpoint-3 (step 3)');
    expect(o2.text()).toMatch(/^toy: completed at step 8\/8 \(5 steps/);
    expect(readMetrics(path.join(out, 'metrics.jsonl')).map((r) => r.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it('a signal delivered as a macrotask (like a real one) reaches a loop of synchronous steps', async () => {
    // Real signals arrive through the event loop; the loop must yield between synchronous steps for them to land.
    const out = path.join(root, 'real');
    const o = sink();
    const e = sink();
    expect(await runProgram(program, ['toy', '--out', out, '--steps', '50', '--signal-at', '2', '--defer-signal'], { out: o.stream, err: e.stream })).toBe(143);
    expect(e.text()).toContain('aptp-toy: SIGTERM received, stopping after saving...');
    expect(o.text()).toMatch(/^toy: aborted at step 3\/50/);
    expect(fs.readFileSync(path.join(out, LATEST_POINTER), 'utf8').trim()).toBe('checkpoint-3');
  });

  it('a NaN loss exits 4 with the step and term named', async () => {
    const out = path.join(root, 'nan');
    const e = sink();
    expect(await runProgram(program, ['toy', '--out', out, '--nan-at', '4'], { out: sink().stream, err: e.stream })).toBe(4);
    expect(e.text()).toContain('aptp-toy toy: loss: non-finite loss at step 5; no checkpoint was written: expected a finite number, found NaN');
    expect(fs.existsSync(path.join(out, LATEST_POINTER))).toBe(false);
  });

  it('resuming with a changed config says where it differs', async () => {
    const out = path.join(root, 'changed');
    await runProgram(program, ['toy', '--out', out, '--steps', '3'], { out: sink().stream, err: sink().stream });
    const e = sink();
    expect(await runProgram(program, ['toy', '--out', out, '--steps', '5', '--resume'], { out: sink().stream, err: e.stream })).toBe(0);
    expect(e.text()).toContain("config differs from the checkpoint's at steps; the run continues with the new values");
  });
});
