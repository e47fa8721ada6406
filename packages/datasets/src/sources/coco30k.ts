import * as path from 'node:path';
import { z } from 'zod';
import { InputError, writeJsonAtomic } from '@aptp/core';
import { decodeImage } from '../image/decode';
import { resizeBilinearCv2, writeNpyRgb } from '../image/npy';
import { NumpyRandomState } from '../iterate/mt19937';
import type { IndexedSource } from '../source';
import { cocoAnnotationSource, readCocoCaptions, type CocoAnnotation, type CocoRowAttributes } from './coco';

/**
 * The COCO-30k evaluation subset (APTP.md §7.2, reference `scripts/metrics/sample_coco_30k.py`): keep the first
 * caption of each val2014 image in file order (40,504 images), then `numpy.random.seed(42)`;
 * `choice(n, 30000, replace=False)`; write `captions_val2014_30k.json` holding only "annotations", in selection order.
 */
export const COCO30K_DEFAULTS = { count: 30_000, seed: 42, fileName: 'captions_val2014_30k.json' } as const;

/** First caption per image, in file order. */
export function firstCaptionPerImage(annotations: readonly CocoAnnotation[]): CocoAnnotation[] {
  const seen = new Set<number>();
  const out: CocoAnnotation[] = [];
  for (const a of annotations) {
    if (seen.has(a.image_id)) continue;
    seen.add(a.image_id);
    out.push(a);
  }
  return out;
}

/** The selected annotations, identical to the reference script's (numpy MT19937 legacy draws). */
export function selectCoco30k(annotations: readonly CocoAnnotation[], count: number = COCO30K_DEFAULTS.count, seed: number = COCO30K_DEFAULTS.seed): CocoAnnotation[] {
  const unique = firstCaptionPerImage(annotations);
  const idx = new NumpyRandomState(seed).choiceWithoutReplacement(unique.length, count);
  return Array.from(idx, (i) => unique[i]!);
}

export interface Coco30kSelectionSummary {
  annotations: number;
  images: number;
  selected: number;
  file: string;
}

/** Reads `captions_val2014.json`, selects the subset and writes it atomically as `{ "annotations": [...] }`. */
export function writeCoco30kSelection(options: { annotationsFile: string; outFile: string; count?: number; seed?: number }): Coco30kSelectionSummary {
  const { annotations } = readCocoCaptions(options.annotationsFile);
  const images = firstCaptionPerImage(annotations).length;
  const selected = selectCoco30k(annotations, options.count ?? COCO30K_DEFAULTS.count, options.seed ?? COCO30K_DEFAULTS.seed);
  writeJsonAtomic(options.outFile, { annotations: selected });
  return { annotations: annotations.length, images, selected: selected.length, file: options.outFile };
}

export const coco30kConfigSchema = z.strictObject({
  format: z.literal('coco30k'),
  root: z.string().min(1).describe('COCO root (§7.2)'),
  selectionFile: z.string().default(`annotations/${COCO30K_DEFAULTS.fileName}`).describe('the subset written by writeCoco30kSelection (relative to root)'),
  imagesDir: z.string().default('images/val2014').describe('val2014 images (relative to root)'),
});
export type Coco30kConfig = z.input<typeof coco30kConfigSchema>;

/** One row per selected image (its first caption), in selection order. */
export async function openCoco30k(config: Coco30kConfig): Promise<IndexedSource<CocoRowAttributes>> {
  const c = coco30kConfigSchema.parse(config);
  const captions = readCocoCaptions(path.resolve(c.root, c.selectionFile));
  return cocoAnnotationSource('coco30k', 'coco30k', captions, path.resolve(c.root, c.imagesDir), 'val');
}

export interface Coco30kImagesSummary {
  written: number;
  /** Selected images that could not be read (file names), skipped and left out. */
  skipped: string[];
}

/**
 * Writes the reference images of the selection: each image decoded to RGB, `cv2.resize` to `size`² (bilinear) and
 * saved as `<outDir>/<image file name without .jpg>.npy` (uint8 HWC), the FID/CMMD reference set of APTP.md §8.2.
 */
export async function writeCoco30kReferenceImages(options: {
  source: IndexedSource<CocoRowAttributes>;
  outDir: string;
  size?: number;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}): Promise<Coco30kImagesSummary> {
  const size = options.size ?? 256;
  const skipped: string[] = [];
  let written = 0;
  for (let i = 0; i < options.source.length; i++) {
    if (options.signal?.aborted) break;
    const row = await options.source.get(i);
    if ('skip' in row) {
      skipped.push(row.file);
      continue;
    }
    const file = row.image.kind === 'file' ? row.image.path : row.id;
    try {
      const img = await decodeImage(row.image);
      writeNpyRgb(path.join(options.outDir, `${path.basename(file).replace(/\.jpe?g$/i, '')}.npy`), resizeBilinearCv2(img, size, size));
      written++;
    } catch (err) {
      if (!(err instanceof InputError)) throw err;
      skipped.push(file);
    }
    options.onProgress?.(i + 1, options.source.length);
  }
  return { written, skipped };
}
