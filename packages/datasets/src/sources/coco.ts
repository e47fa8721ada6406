import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { InputError } from '@aptp/core';
import type { IndexedSource, SourceInfo, SourceRow } from '../source';

/**
 * MS-COCO 2014 captions (APTP.md §7.2): `<root>/annotations/captions_{train,val}2014.json` and
 * `<root>/images/{train2014,val2014}/COCO_{split}2014_%012d.jpg`; one row per caption annotation, in file order
 * (≈414k train rows for 82,783 images).
 */
export const coco2014ConfigSchema = z.strictObject({
  format: z.literal('coco2014'),
  root: z.string().min(1).describe('COCO root with annotations/ and images/ (§7.2)'),
  split: z.enum(['train', 'val']).default('train').describe('train2014 or val2014'),
  annotationsFile: z.string().optional().describe('override of annotations/captions_{split}2014.json (relative to root)'),
  imagesDir: z.string().optional().describe('override of images/{split}2014 (relative to root)'),
});
export type Coco2014Config = z.input<typeof coco2014ConfigSchema>;

/** One caption annotation, as in the COCO JSON. */
export interface CocoAnnotation {
  image_id: number;
  id: number;
  caption: string;
}

export interface CocoCaptions {
  annotations: CocoAnnotation[];
  /** image id → file name, from the "images" list when present. */
  fileNames: Map<number, string>;
}

export interface CocoRowAttributes {
  imageId: number;
  annotationId: number;
}

/** Reads and checks a COCO captions JSON; structural problems throw InputError naming the file and field. */
export function readCocoCaptions(file: string): CocoCaptions {
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new InputError('cannot read COCO captions JSON', { code: 'E_INPUT_FILE', file, cause: err });
  }
  const root = json as { annotations?: unknown; images?: unknown };
  if (typeof root !== 'object' || root === null || !Array.isArray(root.annotations)) {
    throw new InputError('not a COCO captions file', { code: 'E_INPUT_FIELD', file, field: 'annotations', expected: 'an array', found: typeof root?.annotations });
  }
  const annotations = root.annotations as CocoAnnotation[];
  annotations.forEach((a, i) => {
    for (const [key, type] of [
      ['image_id', 'number'],
      ['id', 'number'],
      ['caption', 'string'],
    ] as const) {
      if (typeof (a as unknown as Record<string, unknown>)?.[key] !== type) {
        throw new InputError('bad COCO annotation', { code: 'E_INPUT_FIELD', file, field: `annotations[${i}].${key}`, expected: type, found: (a as unknown as Record<string, unknown>)?.[key] ?? null });
      }
    }
  });
  const fileNames = new Map<number, string>();
  if (Array.isArray(root.images)) {
    for (const im of root.images as { id?: unknown; file_name?: unknown }[]) {
      if (typeof im?.id === 'number' && typeof im.file_name === 'string') fileNames.set(im.id, im.file_name);
    }
  }
  return { annotations, fileNames };
}

export function cocoFileName(split: 'train' | 'val', imageId: number): string {
  return `COCO_${split}2014_${String(imageId).padStart(12, '0')}.jpg`;
}

/** An indexed source over caption annotations; shared by COCO 2014 and the COCO-30k selection. */
export function cocoAnnotationSource(name: string, format: string, captions: CocoCaptions, imagesDir: string, split: 'train' | 'val'): IndexedSource<CocoRowAttributes> {
  const { annotations, fileNames } = captions;
  const notes: SourceInfo['notes'] = {};
  return {
    kind: 'indexed',
    name,
    length: annotations.length,
    info: () => ({ format, rows: annotations.length, notes }),
    async get(index: number): Promise<SourceRow<CocoRowAttributes>> {
      const a = annotations[index]!;
      const file = path.join(imagesDir, fileNames.get(a.image_id) ?? cocoFileName(split, a.image_id));
      return { id: `${name}/${a.id}`, caption: a.caption.trim(), image: { kind: 'file', path: file }, attributes: { imageId: a.image_id, annotationId: a.id } };
    },
  };
}

export async function openCoco2014(config: Coco2014Config): Promise<IndexedSource<CocoRowAttributes>> {
  const c = coco2014ConfigSchema.parse(config);
  const file = path.resolve(c.root, c.annotationsFile ?? `annotations/captions_${c.split}2014.json`);
  const imagesDir = path.resolve(c.root, c.imagesDir ?? `images/${c.split}2014`);
  return cocoAnnotationSource(`coco2014/${c.split}`, 'coco2014', readCocoCaptions(file), imagesDir, c.split);
}
