import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { ConfigError } from '../errors';
import { EXIT, exitCodeFor } from './exitCodes';

/**
 * Thin CLI plumbing: argv → zod → `run`. Precedence: schema defaults < `--config` file (JSON or YAML) < flags.
 * Flags are the schema keys in --kebab-case; `--help` is generated from the schema's `.describe()` texts.
 */
export interface CommandContext {
  /** Where human-readable output goes (stdout by default). */
  out: NodeJS.WritableStream;
  err: NodeJS.WritableStream;
  /** Aborted on SIGINT/SIGTERM; long-running commands save and return. */
  signal: AbortSignal;
}

export interface Command<S extends z.ZodObject = z.ZodObject> {
  name: string;
  summary: string;
  schema: S;
  run(args: z.infer<S>, ctx: CommandContext): Promise<number | void>;
}

/**
 * A command of any option schema. `Command<S>` is contravariant in `S` (its `run` takes the parsed options), so a list
 * of commands with different schemas needs the `any` escape; each command is still checked against its own schema.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyCommand = Command<any>;

export interface Program {
  name: string;
  summary: string;
  commands: AnyCommand[];
}

const kebab = (k: string): string => k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

interface FieldInfo {
  key: string;
  flag: string;
  kind: string;
  description: string;
  defaultValue: unknown;
  options?: readonly unknown[];
  optional: boolean;
  /** The field takes `null` (a flag value `null` means it). */
  nullable: boolean;
}

function fieldInfo(key: string, field: z.ZodType): FieldInfo {
  let t = field as z.ZodType & { def: Record<string, unknown> };
  let defaultValue: unknown;
  let optional = false;
  let nullable = false;
  const description = field.description ?? '';
  for (;;) {
    const def = t.def as { type: string; innerType?: z.ZodType; in?: z.ZodType; defaultValue?: unknown };
    if (def.type === 'default') defaultValue = def.defaultValue;
    if (def.type === 'optional' || def.type === 'default') optional = true;
    if (def.type === 'nullable') nullable = true;
    const inner = def.type === 'default' || def.type === 'optional' || def.type === 'nullable' || def.type === 'prefault' ? def.innerType : def.type === 'pipe' ? def.in : undefined;
    if (!inner) break;
    t = inner as typeof t;
  }
  const def = t.def as { type: string; entries?: Record<string, unknown> };
  return {
    key,
    flag: `--${kebab(key)}`,
    kind: def.type,
    description: description || (t.description ?? ''),
    defaultValue,
    options: def.type === 'enum' && def.entries ? Object.values(def.entries) : undefined,
    optional,
    nullable,
  };
}

export function commandHelp(program: Program, command: AnyCommand): string {
  const lines = [`Usage: ${program.name} ${command.name} [options]`, '', command.summary, '', 'Options:'];
  const fields = Object.entries(command.schema.shape as Record<string, z.ZodType>).map(([k, v]) => fieldInfo(k, v));
  const rows = fields.map((f) => {
    const value = f.kind === 'boolean' ? '' : f.options ? ` <${f.options.join('|')}>` : ` <${f.kind === 'number' ? 'n' : 'value'}>`;
    const dflt = f.defaultValue !== undefined && f.defaultValue !== false ? ` (default: ${JSON.stringify(f.defaultValue)})` : f.optional ? '' : ' (required)';
    return [`  ${f.flag}${value}`, `${f.description}${dflt}`] as const;
  });
  rows.push(['  --config <file>', 'JSON or YAML file with option values (flags override it)']);
  rows.push(['  --help', 'show this help']);
  const width = Math.max(...rows.map((r) => r[0].length)) + 2;
  for (const [a, b] of rows) lines.push(`${a.padEnd(width)}${b}`);
  return `${lines.join('\n')}\n`;
}

export function programHelp(program: Program): string {
  const width = Math.max(...program.commands.map((c) => c.name.length)) + 4;
  return [
    `Usage: ${program.name} <command> [options]`,
    '',
    program.summary,
    '',
    'Commands:',
    ...program.commands.map((c) => `  ${c.name.padEnd(width)}${c.summary}`),
    '',
    `Run "${program.name} <command> --help" for the options of a command.`,
    '',
  ].join('\n');
}

function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError('cannot read config file', { code: 'E_CONFIG_FILE', file, cause: err });
  }
  try {
    if (/\.ya?ml$/i.test(file)) {
      // yaml is an optional dependency of the apps; required lazily so core stays small.
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const yaml = require('yaml') as { parse(s: string): unknown };
      return (yaml.parse(text) ?? {}) as Record<string, unknown>;
    }
    return JSON.parse(text) as Record<string, unknown>;
  } catch (err) {
    throw new ConfigError(`not valid ${path.extname(file).slice(1) || 'JSON'}`, { code: 'E_CONFIG_FILE', file, cause: err });
  }
}

/** Parses argv for one command into its validated options. Throws ConfigError naming the flag. */
export function parseCommandArgs<S extends z.ZodObject>(command: Command<S>, argv: string[]): z.infer<S> {
  const fields = Object.entries(command.schema.shape as Record<string, z.ZodType>).map(([k, v]) => fieldInfo(k, v));
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = { config: { type: 'string' } };
  for (const f of fields) options[kebab(f.key)] = { type: f.kind === 'boolean' ? 'boolean' : 'string', multiple: f.kind === 'array' };
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: false, strict: true });
  } catch (err) {
    throw new ConfigError((err as Error).message, { code: 'E_USAGE', cause: err });
  }
  const fromFile = typeof parsed.values.config === 'string' ? readConfigFile(parsed.values.config) : {};
  const fromFlags: Record<string, unknown> = {};
  for (const f of fields) {
    const v = parsed.values[kebab(f.key)];
    if (v !== undefined) fromFlags[f.key] = f.nullable && v === 'null' ? null : v;
  }
  const merged = { ...fromFile, ...fromFlags };
  const result = command.schema.safeParse(merged);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const key = issue.path.length ? String(issue.path[0]) : issue.code === 'unrecognized_keys' ? (issue as { keys: string[] }).keys.join(', ') : '';
    const source = key in fromFlags ? `--${kebab(key)}` : typeof parsed.values.config === 'string' ? `${parsed.values.config}: ${key}` : `--${kebab(key)}`;
    throw new ConfigError(issue.message, { code: 'E_CONFIG_FIELD', field: source, found: key in merged ? merged[key] : undefined });
  }
  return result.data;
}

/**
 * Runs a program: dispatches `argv[0]` to a command, prints help, maps errors to exit codes. Returns the exit code
 * (the caller calls `process.exit`). SIGINT/SIGTERM abort `ctx.signal`; the command decides how to save and stop.
 */
export async function runProgram(program: Program, argv: string[], io: Partial<Pick<CommandContext, 'out' | 'err'>> = {}): Promise<number> {
  const out = io.out ?? process.stdout;
  const err = io.err ?? process.stderr;
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    out.write(programHelp(program));
    return name ? EXIT.ok : EXIT.usage;
  }
  const command = program.commands.find((c) => c.name === name);
  if (!command) {
    err.write(`${program.name}: unknown command "${name}"; expected one of ${program.commands.map((c) => c.name).join(', ')}\n`);
    return EXIT.usage;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    out.write(commandHelp(program, command));
    return EXIT.ok;
  }
  const controller = new AbortController();
  let signalCode: number | null = null;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (signalCode !== null) process.exit(sig === 'SIGINT' ? EXIT.sigint : EXIT.sigterm); // second signal: hard stop
    signalCode = sig === 'SIGINT' ? EXIT.sigint : EXIT.sigterm;
    err.write(`\n${program.name}: ${sig} received, stopping after saving...\n`);
    controller.abort(new Error(sig));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const args = parseCommandArgs(command, rest);
    const code = await command.run(args, { out, err, signal: controller.signal });
    return signalCode ?? code ?? EXIT.ok;
  } catch (e) {
    const code = exitCodeFor(e);
    const message = e instanceof Error ? e.message : String(e);
    err.write(`${program.name} ${command.name}: ${code === EXIT.bug && e instanceof Error && e.stack ? e.stack : message}\n`);
    if (code === EXIT.usage) err.write(`Run "${program.name} ${command.name} --help" for usage.\n`);
    return signalCode ?? code;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
