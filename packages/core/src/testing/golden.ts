import * as fs from 'node:fs';
import * as path from 'node:path';
import { readSafetensors, HostTensor } from '../io/safetensors';

/**
 * Golden reference data lives outside the repo (`../shared/golden` from the repo root, or `APTP_GOLDEN_DIR`).
 * Tests that need it use `describeGolden`: absent data skips with a message, except under `CI=true`, where a
 * missing folder fails the suite.
 */
function repoRoot(): string {
  let dir = __dirname;
  for (;;) {
    if (fs.existsSync(path.join(dir, 'nx.json'))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) return process.cwd();
    dir = parent;
  }
}

export function goldenDir(): string {
  return process.env.APTP_GOLDEN_DIR ? path.resolve(process.env.APTP_GOLDEN_DIR) : path.resolve(repoRoot(), '../shared/golden');
}

/** Absolute path of a golden file, or null when the golden folder (or that file) is absent. */
export function goldenPath(...parts: string[]): string | null {
  const p = path.join(goldenDir(), ...parts);
  return fs.existsSync(p) ? p : null;
}

function isCi(): boolean {
  return process.env.CI === 'true' || process.env.CI === '1';
}

/**
 * `describe` that runs only when `golden/<rel>` exists. Under CI a missing folder is a failing test.
 */
export function describeGolden(rel: string, name: string, fn: (dir: string) => void): void {
  const p = goldenPath(rel);
  if (p) {
    describe(name, () => fn(p));
  } else if (isCi()) {
    describe(name, () => {
      it('has its golden data', () => {
        throw new Error(`golden data missing: ${path.join(goldenDir(), rel)} (set APTP_GOLDEN_DIR)`);
      });
    });
  } else {
    // eslint-disable-next-line no-console
    console.warn(`skipping "${name}": golden data not found at ${path.join(goldenDir(), rel)} (set APTP_GOLDEN_DIR)`);
    describe.skip(name, () => fn(''));
  }
}

/** The golden JSON array format `{dtype, shape, data}`. */
export interface GoldenArray {
  dtype: 'float32' | 'float64';
  shape: number[];
  data: number[];
}

export function isGoldenArray(v: unknown): v is GoldenArray {
  return typeof v === 'object' && v !== null && 'shape' in v && 'data' in v && Array.isArray((v as GoldenArray).data);
}

/** Decodes a golden JSON array: float32 values are rounded to float32 (shortest round-trip strings). */
export function goldenArray(v: GoldenArray): { shape: number[]; data: Float32Array | Float64Array } {
  const data = v.dtype === 'float64' ? Float64Array.from(v.data) : Float32Array.from(v.data);
  return { shape: v.shape, data };
}

export function readGoldenJson<T = unknown>(file: string): T {
  const text = fs.readFileSync(file, 'utf8');
  return JSON.parse(text, (_k, val) => (val === '-inf' ? -Infinity : val === 'inf' ? Infinity : val)) as T;
}

export function readGoldenTensors(file: string): Map<string, HostTensor> {
  return readSafetensors(file);
}
