import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { InputError, type Command } from '@aptp/core';
import { openSource } from './config';
import { sourceTiles, writeContactSheet } from './contactSheet';
import { formatDatasetStats, datasetStats } from './stats';

/**
 * `data`: statistics of a data set and, optionally, a contact sheet PNG of its first samples. A `Command` (core CLI
 * plumbing): apps put it in their program (the trainer's `data` command); output goes to the app's `ctx.out`.
 */
const schema = z.strictObject({
  dataset: z.string().default('synthetic').describe('a data set config (.json, see datasetConfigSchema) or "synthetic" for the built-in world'),
  limit: z.coerce.number().int().positive().default(1000).describe('rows to examine for the statistics'),
  decode: z.boolean().default(true).describe('decode every examined image (finds truncated and corrupt files)'),
  sheet: z.string().optional().describe('write a contact sheet PNG of the first samples to this file'),
  count: z.coerce.number().int().positive().default(32).describe('samples on the contact sheet'),
  columns: z.coerce.number().int().positive().default(8).describe('contact sheet columns'),
  resolution: z.coerce.number().int().positive().default(96).describe('tile size for decoded images (synthetic images keep their size)'),
});

function readDatasetConfig(spec: string): { raw: unknown; file?: string } {
  if (spec === 'synthetic') return { raw: { format: 'synthetic' } };
  let text: string;
  try {
    text = fs.readFileSync(spec, 'utf8');
  } catch (err) {
    throw new InputError('cannot read data set config', { code: 'E_INPUT_FILE', file: spec, field: 'dataset', cause: err });
  }
  try {
    const raw = JSON.parse(text) as Record<string, unknown>;
    // Relative paths in the config are relative to the config file.
    if (typeof raw.root === 'string') raw.root = path.resolve(path.dirname(spec), raw.root);
    return { raw, file: spec };
  } catch (err) {
    throw new InputError('data set config is not valid JSON', { code: 'E_INPUT_FILE', file: spec, cause: err });
  }
}

export const datasetInfoCommand: Command<typeof schema> = {
  name: 'data',
  summary: 'print statistics of a data set (rows, skipped files, captions, categories) and write a contact sheet PNG',
  schema,
  async run(args, ctx) {
    const { raw, file } = readDatasetConfig(args.dataset);
    const source = await openSource(raw, file);
    const stats = await datasetStats(source, { limit: args.limit, decode: args.decode, signal: ctx.signal });
    ctx.out.write(`${formatDatasetStats(stats)}\n`);
    if (args.sheet) {
      const { tiles, skipped } = await sourceTiles(source, { count: args.count, resolution: args.resolution });
      const sheet = await writeContactSheet(args.sheet, tiles, { columns: args.columns });
      ctx.out.write(`contact sheet: ${args.sheet} (${tiles.length} samples, ${sheet.width}x${sheet.height}${skipped.length ? `, ${skipped.length} unreadable skipped` : ''})\n`);
    }
    return 0;
  },
};
