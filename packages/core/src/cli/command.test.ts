import * as fs from 'node:fs';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { z } from 'zod';
import { Command, Program, parseCommandArgs, runProgram, commandHelp } from './command';
import { ProgressBar } from './progress';
import { useTempDirs } from '../testing/tempDirs';
import { ConfigError, InputError, NumericError } from '../errors';

const schema = z.strictObject({
  steps: z.coerce.number().int().positive().default(10).describe('training steps'),
  learningRate: z.coerce.number().default(2e-4).describe('learning rate'),
  quick: z.boolean().default(false).describe('small run'),
  mode: z.enum(['ot', 'none']).default('ot').describe('routing'),
  out: z.string().optional().describe('run folder'),
});

function sink(): { stream: Writable; text: () => string } {
  let buf = '';
  return { stream: new Writable({ write(c, _e, cb) { buf += c.toString(); cb(); } }), text: () => buf };
}

const tempDir = useTempDirs('aptp-cli-');

describe('CLI plumbing', () => {
  const cmd: Command<typeof schema> = { name: 'train', summary: 'train things', schema, run: async () => 0 };
  const program: Program = { name: 'aptp-x', summary: 'test program', commands: [cmd] };

  it('applies defaults < --config file < flags, with kebab-case flags', () => {
    const dir = tempDir();
    const cfg = path.join(dir, 'c.yaml');
    fs.writeFileSync(cfg, 'steps: 20\nmode: none\n');
    expect(parseCommandArgs(cmd, [])).toEqual({ steps: 10, learningRate: 2e-4, quick: false, mode: 'ot' });
    expect(parseCommandArgs(cmd, ['--config', cfg])).toMatchObject({ steps: 20, mode: 'none' });
    expect(parseCommandArgs(cmd, ['--config', cfg, '--steps', '5', '--learning-rate', '0.1', '--quick'])).toMatchObject({ steps: 5, learningRate: 0.1, quick: true, mode: 'none' });
  });

  it('a nullable option takes the flag value `null`; elsewhere `null` is just a string', () => {
    const nullable = z.strictObject({
      gamma: z.coerce.number().positive().nullable().default(5).describe('min-SNR γ; null = off'),
      name: z.string().default('x').describe('a name'),
    });
    const c: Command<typeof nullable> = { name: 'n', summary: 'n', schema: nullable, run: async () => 0 };
    expect(parseCommandArgs(c, [])).toEqual({ gamma: 5, name: 'x' });
    expect(parseCommandArgs(c, ['--gamma', 'null'])).toEqual({ gamma: null, name: 'x' });
    expect(parseCommandArgs(c, ['--gamma', '2.5', '--name', 'null'])).toEqual({ gamma: 2.5, name: 'null' });
    expect(() => parseCommandArgs(c, ['--gamma', 'nil'])).toThrow(/--gamma/);
  });

  it('names the bad flag or config key', () => {
    const dir = tempDir();
    const cfg = path.join(dir, 'c.json');
    fs.writeFileSync(cfg, JSON.stringify({ stepz: 3 }));
    expect(() => parseCommandArgs(cmd, ['--steps', '-1'])).toThrow(ConfigError);
    expect(() => parseCommandArgs(cmd, ['--steps', '-1'])).toThrow(/--steps/);
    expect(() => parseCommandArgs(cmd, ['--mode', 'sinkhorn'])).toThrow(/--mode/);
    expect(() => parseCommandArgs(cmd, ['--config', cfg])).toThrow(/c\.json: stepz/);
    expect(() => parseCommandArgs(cmd, ['--bogus'])).toThrow(/bogus/);
  });

  it('prints help from the schema and maps errors to exit codes', async () => {
    const help = commandHelp(program, cmd);
    expect(help).toMatch(/--learning-rate <n>\s+learning rate \(default: 0.0002\)/);
    expect(help).toMatch(/--mode <ot\|none>/);
    const o = sink();
    const e = sink();
    expect(await runProgram(program, ['train', '--help'], { out: o.stream, err: e.stream })).toBe(0);
    expect(o.text()).toMatch(/Usage: aptp-x train/);
    expect(await runProgram(program, ['nope'], { out: o.stream, err: e.stream })).toBe(2);
    expect(await runProgram(program, ['train', '--steps', 'x'], { out: o.stream, err: e.stream })).toBe(2);
    const failing = (error: Error): Program => ({ ...program, commands: [{ ...cmd, run: async () => { throw error; } }] });
    expect(await runProgram(failing(new InputError('missing', { file: 'a.json' })), ['train'], { out: o.stream, err: e.stream })).toBe(3);
    expect(await runProgram(failing(new NumericError('loss is NaN')), ['train'], { out: o.stream, err: e.stream })).toBe(4);
    expect(await runProgram(failing(new Error('boom')), ['train'], { out: o.stream, err: e.stream })).toBe(1);
    expect(e.text()).toMatch(/a\.json: missing/);
  });

  it('draws plain progress lines off a TTY', () => {
    const o = sink();
    const bar = new ProgressBar(o.stream, { intervalMs: 0 });
    bar.update({ label: 'prune', done: 1, total: 4, info: { loss: 0.5 } });
    bar.update({ label: 'prune', done: 4, total: 4 });
    const lines = o.text().trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^prune: 1\/4 +25% .* loss=0.5000$/);
    expect(lines[1]).toMatch(/^prune: 4\/4 100%/);
  });
});
