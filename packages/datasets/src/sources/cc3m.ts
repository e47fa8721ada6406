import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { InputError, writeFileAtomic } from '@aptp/core';
import { addNote, type IndexedSource, type SourceInfo, type SourceRow } from '../source';
import { LineIndex } from './lineIndex';

/**
 * Conceptual Captions 3M in the reference layout (APTP.md §7.1): `<root>/Train_GCC-training.tsv` and
 * `<root>/Validation_GCC-1.1.0-Validation.tsv` (caption \t url, no header) plus images downloaded into
 * `<root>/training/` and `<root>/validation/`, named `<row index>_<hash>` (no extension).
 *
 * As in the reference, the rows are the image files (sorted by row index); each takes its caption from the TSV row
 * named by its file, so a missing or broken image never moves a caption onto another image (fixing the HEAD
 * misalignment bug, §10.7). TSV rows without an image are counted in `info().notes.missingImage`.
 */
export const cc3mConfigSchema = z.strictObject({
  format: z.literal('cc3m'),
  root: z.string().min(1).describe('folder holding the TSV files and image folders (reference `data.dataset_name` path, §7.1)'),
  split: z.enum(['train', 'validation']).default('train').describe('train → Train_GCC-training.tsv + training/; validation → Validation_GCC-1.1.0-Validation.tsv + validation/'),
  tsvFile: z.string().optional().describe('override of the TSV path (relative to root)'),
  imagesDir: z.string().optional().describe('override of the image folder (relative to root)'),
  imageListFile: z.string().optional().describe('cache of the image folder listing, one name a line (reference: ../data/{split}_cc3m_names.pkl); written if absent'),
});
export type Cc3mConfig = z.input<typeof cc3mConfigSchema>;

export const CC3M_LAYOUT = {
  train: { tsv: 'Train_GCC-training.tsv', images: 'training' },
  validation: { tsv: 'Validation_GCC-1.1.0-Validation.tsv', images: 'validation' },
} as const;

async function listImages(dir: string, cacheFile: string | undefined): Promise<string[]> {
  if (cacheFile && fs.existsSync(cacheFile)) {
    return fs.readFileSync(cacheFile, 'utf8').split('\n').filter((s) => s !== '');
  }
  const names: string[] = [];
  let d: fs.Dir;
  try {
    d = await fs.promises.opendir(dir);
  } catch (err) {
    throw new InputError('image folder is missing or unreadable', { code: 'E_INPUT_DIR', file: dir, cause: err });
  }
  for await (const e of d) if (e.isFile() || e.isSymbolicLink()) names.push(e.name);
  if (cacheFile) writeFileAtomic(cacheFile, names.join('\n') + '\n');
  return names;
}

export async function openCc3m(config: Cc3mConfig): Promise<IndexedSource<{ row: number }>> {
  const c = cc3mConfigSchema.parse(config);
  const layout = CC3M_LAYOUT[c.split];
  const tsvFile = path.resolve(c.root, c.tsvFile ?? layout.tsv);
  const imagesDir = path.resolve(c.root, c.imagesDir ?? layout.images);
  if (!fs.existsSync(tsvFile)) throw new InputError('caption TSV is missing', { code: 'E_INPUT_FILE', file: tsvFile, expected: `${layout.tsv} in ${c.root}` });
  const lines = await LineIndex.build(tsvFile);
  const names = await listImages(imagesDir, c.imageListFile ? path.resolve(c.root, c.imageListFile) : undefined);

  const notes: SourceInfo['notes'] = {};
  const byRow = new Map<number, string>();
  for (const name of names.sort()) {
    const m = /^(\d+)(?:_|\.|$)/.exec(name);
    if (!m) {
      addNote(notes, 'unrecognisedFile', name);
      continue;
    }
    const row = Number(m[1]);
    if (byRow.has(row)) addNote(notes, 'duplicateRow', name);
    else byRow.set(row, name);
  }
  const rows = Uint32Array.from(byRow.keys()).sort();
  const files = Array.from(rows, (r) => byRow.get(r)!);
  for (let r = 0, k = 0; r < lines.length; r++) {
    while (k < rows.length && rows[k]! < r) k++;
    if (rows[k] !== r) addNote(notes, 'missingImage', `${path.basename(tsvFile)} row ${r}`);
  }
  const name = `cc3m/${c.split}`;
  return {
    kind: 'indexed',
    name,
    length: rows.length,
    info: () => ({ format: 'cc3m', rows: rows.length, notes }),
    async get(index: number): Promise<SourceRow<{ row: number }>> {
      const row = rows[index]!;
      const file = path.join(imagesDir, files[index]!);
      const id = `${name}/${row}`;
      if (row >= lines.length) return { skip: 'noCaption', id, file, message: `no TSV row ${row} in ${tsvFile} (${lines.length} rows)` };
      const line = await lines.line(row);
      const tab = line.indexOf('\t');
      const caption = (tab >= 0 ? line.slice(0, tab) : line).trim();
      return { id, caption, image: { kind: 'file', path: file }, attributes: { row } };
    },
  };
}
