/**
 * Shared plumbing of the ONNX feature extractors: run one batch through a model and return `[batch, dim]` features
 * (trailing singleton dims squeezed, e.g. Inception pool3 `[B, 2048, 1, 1]`), hash a model file for cache keys.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { ShapeError } from '@aptp/core';
import type { OrtModel, OrtTensorData } from '@aptp/core';
import type { FeatureMatrix } from '../metrics/frechet';

/** Runs `feeds` and returns output `outputName` (default: the first) as a [batch, dim] float32 matrix. */
export async function runEmbedding(model: OrtModel, feeds: Record<string, OrtTensorData>, batch: number, outputName?: string): Promise<FeatureMatrix> {
  const name = outputName ?? model.outputNames[0]!;
  const out = (await model.run(feeds, [name]))[name]!;
  const dims = [...out.dims];
  while (dims.length > 2 && dims[dims.length - 1] === 1) dims.pop();
  if (dims.length !== 2 || dims[0] !== batch) {
    throw new ShapeError('feature output must be [batch, dim] (trailing 1s allowed)', { file: model.name, field: name, expected: `[${batch}, dim]`, found: out.dims });
  }
  const data = out.data instanceof Float32Array ? out.data : Float32Array.from(out.data as Float64Array);
  return { data, rows: batch, dim: dims[1]! };
}

/** Concatenates row blocks of equal dim. */
export function concatRows(parts: FeatureMatrix[], dim: number): FeatureMatrix {
  const rows = parts.reduce((s, p) => s + p.rows, 0);
  const data = new Float32Array(rows * dim);
  let o = 0;
  for (const p of parts) {
    data.set(p.data, o);
    o += p.data.length;
  }
  return { data, rows, dim };
}

/** sha256 (hex) of a file's bytes, streamed. */
export async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of fs.createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** In-place row-wise L2 normalisation of a float32 feature matrix. */
export function normalizeRowsInPlace(m: FeatureMatrix): FeatureMatrix {
  for (let r = 0; r < m.rows; r++) {
    let s = 0;
    for (let c = 0; c < m.dim; c++) s += m.data[r * m.dim + c]! ** 2;
    const inv = s > 0 ? 1 / Math.sqrt(s) : 0;
    for (let c = 0; c < m.dim; c++) m.data[r * m.dim + c] = m.data[r * m.dim + c]! * inv;
  }
  return m;
}
