import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tar from 'tar-stream';
import { z } from 'zod';
import { InputError } from '@aptp/core';
import type { ShardedSource, SourceInfo, SourceRow } from '../source';

/**
 * WebDataset shards as img2dataset writes them: `.tar` files whose members are grouped by key (the path up to the
 * first dot of the base name), e.g. `000010005.jpg`, `000010005.txt`, `000010005.json`. Read straight from the
 * archive with tar-stream, one shard at a time; only one sample's bytes (plus the shuffle buffer) are in memory.
 * Caption: the `.txt` member, else the `caption` field of the `.json` member.
 */
export const webDatasetConfigSchema = z.strictObject({
  format: z.literal('webdataset'),
  shards: z
    .union([z.string().min(1), z.array(z.string().min(1)).min(1)])
    .describe('shard files: a .tar path, a folder of .tar files, a brace pattern "cc3m/{00000..00331}.tar", or a list of these'),
  root: z.string().optional().describe('folder relative shard paths start from'),
  imageExtensions: z.array(z.string()).default(['jpg', 'jpeg', 'png', 'webp']).describe('member extensions taken as the image, in order of preference'),
  captionJsonField: z.string().default('caption').describe('field of the .json member used when there is no .txt member'),
});
export type WebDatasetConfig = z.input<typeof webDatasetConfigSchema>;

/** `a{00..02}b` → `a00b a01b a02b` (zero padding kept); `a{x,y}b` → `axb ayb`. */
export function expandBraces(pattern: string): string[] {
  const m = /\{([^{}]*)\}/.exec(pattern);
  if (!m) return [pattern];
  const [whole, body] = m as unknown as [string, string];
  const pre = pattern.slice(0, m.index);
  const post = pattern.slice(m.index + whole.length);
  let parts: string[];
  const range = /^(\d+)\.\.(\d+)$/.exec(body);
  if (range) {
    const [, a, b] = range as unknown as [string, string, string];
    const width = a.length;
    parts = [];
    for (let i = Number(a); i <= Number(b); i++) parts.push(String(i).padStart(width, '0'));
  } else parts = body.split(',');
  return parts.flatMap((p) => expandBraces(pre + p + post));
}

export function resolveShards(spec: string | string[], root = '.'): string[] {
  const out: string[] = [];
  for (const item of Array.isArray(spec) ? spec : [spec]) {
    for (const p of expandBraces(item)) {
      const abs = path.resolve(root, p);
      let stat: fs.Stats;
      try {
        stat = fs.statSync(abs);
      } catch (err) {
        throw new InputError('shard is missing', { code: 'E_INPUT_FILE', file: abs, field: 'shards', cause: err });
      }
      if (stat.isDirectory()) {
        const tars = fs
          .readdirSync(abs)
          .filter((n) => n.endsWith('.tar'))
          .sort();
        if (tars.length === 0) throw new InputError('folder holds no .tar shards', { code: 'E_INPUT_FILE', file: abs, field: 'shards' });
        out.push(...tars.map((n) => path.join(abs, n)));
      } else out.push(abs);
    }
  }
  return out;
}

/** Splits a member name into (key, extension) the WebDataset way: the extension starts at the first dot of the base name. */
export function splitMemberName(name: string): { key: string; ext: string } {
  const slash = name.lastIndexOf('/');
  const dot = name.indexOf('.', slash + 1);
  return dot < 0 ? { key: name, ext: '' } : { key: name.slice(0, dot), ext: name.slice(dot + 1).toLowerCase() };
}

interface Members {
  key: string;
  files: Map<string, Buffer>;
}

/** Reads one shard's samples in archive order. A truncated archive ends the shard with a skipped row. */
async function* readTarSamples(file: string, signal?: AbortSignal): AsyncGenerator<Members | { error: unknown; key: string }> {
  const extract = tar.extract();
  const input = fs.createReadStream(file);
  input.on('error', (err) => extract.destroy(err));
  input.pipe(extract);
  let current: Members | undefined;
  try {
    for await (const entry of extract) {
      if (signal?.aborted) return;
      if (entry.header.type !== 'file') {
        entry.resume();
        continue;
      }
      const { key, ext } = splitMemberName(entry.header.name);
      if (current && current.key !== key) {
        yield current;
        current = undefined;
      }
      current ??= { key, files: new Map() };
      const chunks: Buffer[] = [];
      for await (const c of entry as AsyncIterable<Buffer>) chunks.push(c);
      current.files.set(ext, Buffer.concat(chunks));
    }
    if (current) yield current;
  } catch (err) {
    yield { error: err, key: current?.key ?? '(archive)' };
  } finally {
    input.destroy();
    extract.destroy();
  }
}

export async function openWebDataset(config: WebDatasetConfig): Promise<ShardedSource<{ key: string; json?: unknown }>> {
  const c = webDatasetConfigSchema.parse(config);
  const shards = resolveShards(c.shards, c.root ?? '.');
  const notes: SourceInfo['notes'] = {};
  const name = `webdataset/${path.basename(path.dirname(shards[0]!))}`;
  return {
    kind: 'sharded',
    name,
    shards,
    info: () => ({ format: 'webdataset', shards: shards.length, notes }),
    async *readShard(shard: number, signal?: AbortSignal): AsyncGenerator<SourceRow<{ key: string; json?: unknown }>> {
      const file = shards[shard]!;
      const base = path.basename(file);
      for await (const s of readTarSamples(file, signal)) {
        if ('error' in s) {
          const message = s.error instanceof Error ? s.error.message : String(s.error);
          yield { skip: 'truncatedImage', id: `${base}/${s.key}`, file: `${file}:${s.key}`, message: `archive ends early or is corrupt: ${message}` };
          return;
        }
        const id = `${base}/${s.key}`;
        const ext = c.imageExtensions.find((e) => s.files.has(e));
        if (!ext) {
          yield { skip: 'missingImage', id, file: `${file}:${s.key}`, message: `no image member (${c.imageExtensions.join('/')}) for key ${s.key}` };
          continue;
        }
        let json: unknown;
        const jsonBytes = s.files.get('json');
        if (jsonBytes) {
          try {
            json = JSON.parse(jsonBytes.toString('utf8'));
          } catch {
            json = undefined;
          }
        }
        const txt = s.files.get('txt');
        const fromJson = (json as Record<string, unknown> | undefined)?.[c.captionJsonField];
        const caption = txt ? txt.toString('utf8') : typeof fromJson === 'string' ? fromJson : undefined;
        if (caption === undefined) {
          yield { skip: 'noCaption', id, file: `${file}:${s.key}.${ext}`, message: `no .txt member and no "${c.captionJsonField}" in .json for key ${s.key}` };
          continue;
        }
        yield { id, caption: caption.trim(), image: { kind: 'bytes', bytes: s.files.get(ext)!, name: `${file}:${s.key}.${ext}` }, attributes: { key: s.key, json } };
      }
    },
  };
}
