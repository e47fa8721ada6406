import * as fs from 'node:fs';
import * as path from 'node:path';
import { InputError } from '@aptp/core';

/** Throws one `InputError` listing every expected file of a folder that is missing (STYLE.md §3 Packages). */
export function requireFiles(dir: string, files: readonly string[], what: string): void {
  const missing = files.filter((f) => !fs.existsSync(path.join(dir, f)));
  if (missing.length > 0) {
    throw new InputError(`not a ${what} folder: missing ${missing.join(', ')}`, {
      code: 'E_FILE_MISSING',
      file: dir,
      expected: files.join(', '),
      found: missing.length === files.length ? 'none of them' : `missing ${missing.join(', ')}`,
    });
  }
}

export function readJsonFile(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new InputError('cannot read file', { code: 'E_FILE_MISSING', file, cause: err });
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new InputError('not valid JSON', { code: 'E_JSON', file, cause: err });
  }
}

export function sameStructure(a: { width: number[][]; depth: number[][] }, b: { width: number[][]; depth: number[][] }): boolean {
  return JSON.stringify({ width: a.width, depth: a.depth }) === JSON.stringify({ width: b.width, depth: b.depth });
}
