import { ConfigError, Rng } from '@aptp/core';

/**
 * `torch.nn.init.orthogonal_` for a `[rows, cols]` matrix, seeded by our `Rng` (APTP.md §2.2–2.3): a standard-normal
 * matrix (transposed when rows < cols) is QR-factorised with R's diagonal made positive, so the result has orthonormal
 * rows (rows ≤ cols) or orthonormal columns (rows > cols). QR by twice-repeated modified Gram–Schmidt in float64
 * (numerically orthogonal to ~1e-15, equal to Householder QR with the sign fix).
 */
export function orthogonalMatrix(rows: number, cols: number, rng: Rng, gain = 1): Float32Array {
  if (!(Number.isInteger(rows) && rows > 0 && Number.isInteger(cols) && cols > 0)) {
    throw new ConfigError('orthogonal init needs a non-empty 2-D shape', { field: 'shape', found: [rows, cols] });
  }
  const transpose = rows < cols;
  const m = transpose ? cols : rows; // tall: m ≥ n
  const n = transpose ? rows : cols;
  // Columns of the tall m×n matrix, stored column-major for Gram–Schmidt.
  const q: Float64Array[] = [];
  const normals = rng.normal(rows * cols);
  for (let j = 0; j < n; j++) {
    const col = new Float64Array(m);
    for (let i = 0; i < m; i++) {
      // The normal matrix is drawn row-major as [rows, cols]; its transpose (if any) is the tall matrix.
      col[i] = transpose ? normals[j * cols + i]! : normals[i * cols + j]!;
    }
    for (let pass = 0; pass < 2; pass++) {
      for (let k = 0; k < j; k++) {
        const qk = q[k]!;
        let dot = 0;
        for (let i = 0; i < m; i++) dot += qk[i]! * col[i]!;
        for (let i = 0; i < m; i++) col[i] -= dot * qk[i]!;
      }
    }
    let norm = 0;
    for (let i = 0; i < m; i++) norm += col[i]! * col[i]!;
    norm = Math.sqrt(norm);
    if (!(norm > 1e-12)) throw new ConfigError('degenerate random matrix in orthogonal init', { field: 'rng', found: norm });
    for (let i = 0; i < m; i++) col[i] /= norm;
    q.push(col);
  }
  const out = new Float32Array(rows * cols);
  for (let j = 0; j < n; j++) {
    for (let i = 0; i < m; i++) {
      const v = gain * q[j]![i]!;
      if (transpose) out[j * cols + i] = v; // row j of the [rows, cols] result
      else out[i * cols + j] = v;
    }
  }
  return out;
}
