import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { InputError } from '@aptp/core';
import { addNote, type IndexedSource, type SourceInfo, type SourceRow } from '../source';

/**
 * A plain folder of images with a captions file: JSONL (one `{"file": "a.jpg", "caption": "..."}` object a line) or
 * CSV with a header row (RFC 4180 quoting). Rows follow the captions file; a listed image that is missing or broken
 * is skipped by the loader with its own file name, never shifting captions.
 */
export const imageFolderConfigSchema = z.strictObject({
  format: z.literal('imageFolder'),
  root: z.string().min(1).describe('folder the image paths are relative to'),
  captions: z.string().min(1).describe('captions file (.jsonl or .csv), relative to root'),
  captionsFormat: z.enum(['jsonl', 'csv']).optional().describe('default: from the captions file extension'),
  imageField: z.string().default('file').describe('field / column holding the image path'),
  captionField: z.string().default('caption').describe('field / column holding the caption'),
});
export type ImageFolderConfig = z.input<typeof imageFolderConfigSchema>;

/** RFC 4180 CSV: quoted fields may hold commas, doubled quotes and newlines. */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (quoted) {
      if (ch === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i++;
        } else quoted = false;
      } else field += ch;
    } else if (ch === '"' && field === '') quoted = true;
    else if (ch === ',') {
      row.push(field);
      field = '';
    } else if (ch === '\n' || ch === '\r') {
      if (ch === '\r' && text[i + 1] === '\n') i++;
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
    } else field += ch;
  }
  if (field !== '' || row.length > 0) {
    row.push(field);
    rows.push(row);
  }
  return rows.filter((r) => !(r.length === 1 && r[0] === ''));
}

interface Entry {
  file: string;
  caption: string;
}

function readEntries(file: string, format: 'jsonl' | 'csv', imageField: string, captionField: string, notes: SourceInfo['notes']): Entry[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new InputError('captions file is missing or unreadable', { code: 'E_INPUT_FILE', file, cause: err });
  }
  const entries: Entry[] = [];
  const base = path.basename(file);
  if (format === 'jsonl') {
    text.split('\n').forEach((line, i) => {
      if (line.trim() === '') return;
      let obj: unknown;
      try {
        obj = JSON.parse(line);
      } catch {
        addNote(notes, 'badLine', `${base}:${i + 1}`);
        return;
      }
      const o = obj as Record<string, unknown>;
      if (typeof o !== 'object' || o === null || typeof o[imageField] !== 'string') {
        addNote(notes, 'badLine', `${base}:${i + 1} (no string "${imageField}")`);
        return;
      }
      const caption = o[captionField];
      entries.push({ file: o[imageField] as string, caption: typeof caption === 'string' ? caption : '' });
    });
    return entries;
  }
  const rows = parseCsv(text);
  const header = rows[0] ?? [];
  const fi = header.indexOf(imageField);
  const ci = header.indexOf(captionField);
  for (const [field, idx] of [
    [imageField, fi],
    [captionField, ci],
  ] as const) {
    if (idx < 0) throw new InputError('CSV header lacks a column', { code: 'E_INPUT_FIELD', file, field, expected: `a "${field}" column`, found: header });
  }
  rows.slice(1).forEach((r, i) => {
    if (r.length !== header.length) {
      addNote(notes, 'badLine', `${base}: row ${i + 2} (${r.length} fields, header has ${header.length})`);
      return;
    }
    entries.push({ file: r[fi]!, caption: r[ci]! });
  });
  return entries;
}

export async function openImageFolder(config: ImageFolderConfig): Promise<IndexedSource<undefined>> {
  const c = imageFolderConfigSchema.parse(config);
  const captionsFile = path.resolve(c.root, c.captions);
  const format = c.captionsFormat ?? (/\.csv$/i.test(captionsFile) ? 'csv' : 'jsonl');
  const notes: SourceInfo['notes'] = {};
  const entries = readEntries(captionsFile, format, c.imageField, c.captionField, notes);
  const name = `imageFolder/${path.basename(path.resolve(c.root))}`;
  return {
    kind: 'indexed',
    name,
    length: entries.length,
    info: () => ({ format: 'imageFolder', rows: entries.length, notes }),
    async get(index: number): Promise<SourceRow<undefined>> {
      const e = entries[index]!;
      return { id: e.file, caption: e.caption.trim(), image: { kind: 'file', path: path.resolve(c.root, e.file) } };
    },
  };
}
