import * as tf from '@tensorflow/tfjs-core';
import { BackendAttempt, BackendError, ConfigError } from '../errors';

/** Backends in order of preference (STACK.md: the GPU and native packages cannot install on the dev machines). */
export const BACKEND_ORDER = ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKEND_ORDER)[number];

/** User-facing aliases: `--backend node-gpu` etc. */
const ALIASES: Record<string, BackendName> = {
  'tfjs-node-gpu': 'tensorflow-gpu',
  'node-gpu': 'tensorflow-gpu',
  gpu: 'tensorflow-gpu',
  'tensorflow-gpu': 'tensorflow-gpu',
  'tfjs-node': 'tensorflow',
  node: 'tensorflow',
  tensorflow: 'tensorflow',
  wasm: 'wasm',
  cpu: 'cpu',
};

export interface BackendChoice {
  /** The tfjs backend name now active (`tf.getBackend()`). */
  name: BackendName;
  /** Every backend tried, in order, with the reason it was skipped. */
  tried: BackendAttempt[];
}

export interface InitBackendOptions {
  /** Force one backend (name or alias); default: `process.env.APTP_BACKEND`, else the best installed one. */
  backend?: string;
}

export function resolveBackendName(name: string): BackendName {
  const resolved = ALIASES[name.toLowerCase()];
  if (!resolved) {
    throw new ConfigError('unknown backend', {
      code: 'E_BACKEND_NAME',
      field: 'backend',
      expected: `one of ${Object.keys(ALIASES).join(', ')}`,
      found: name,
    });
  }
  return resolved;
}

// Guarded dynamic imports: the native packages are optional and absent from the lockfile.
// The module names are kept in variables so bundlers do not try to resolve them at build time.
const NATIVE_MODULES: Record<'tensorflow-gpu' | 'tensorflow', string> = {
  'tensorflow-gpu': '@tensorflow/tfjs-node-gpu',
  tensorflow: '@tensorflow/tfjs-node',
};

async function register(name: BackendName): Promise<void> {
  if (name === 'cpu') {
    await import('@tensorflow/tfjs-backend-cpu');
  } else if (name === 'wasm') {
    await import('@tensorflow/tfjs-backend-wasm');
  } else {
    const moduleName = NATIVE_MODULES[name];
    await import(moduleName);
  }
}

/** The cpu backend prints a "install tfjs-node" banner on first use; we report the backend choice ourselves. */
export function silenceCpuNagging(): void {
  const backend = tf.findBackend('cpu') as unknown as { firstUse?: boolean } | null;
  if (backend) backend.firstUse = false;
}

async function tryBackend(name: BackendName): Promise<BackendAttempt> {
  try {
    await register(name);
    if (tf.findBackendFactory(name) === null && tf.findBackend(name) === null) {
      return { name, ok: false, error: 'not registered after import' };
    }
    const ok = await tf.setBackend(name);
    if (!ok) return { name, ok: false, error: 'initialisation failed' };
    await tf.ready();
    silenceCpuNagging();
    return { name, ok: true };
  } catch (err) {
    const message = err instanceof Error ? err.message.split('\n')[0] : String(err);
    return { name, ok: false, error: message };
  }
}

/**
 * Picks the tensor backend: tfjs-node-gpu → tfjs-node → wasm → cpu, the first that imports and initialises.
 * `APTP_BACKEND` (or `options.backend`) forces one; forcing a backend that fails is an error, not a fallback.
 */
export async function initBackend(options: InitBackendOptions = {}): Promise<BackendChoice> {
  const forced = options.backend ?? process.env.APTP_BACKEND;
  const order: readonly BackendName[] = forced ? [resolveBackendName(forced)] : BACKEND_ORDER;
  const tried: BackendAttempt[] = [];
  for (const name of order) {
    if (tf.getBackend() === name && tf.engine().backendNames().includes(name)) {
      tried.push({ name, ok: true });
      return { name, tried };
    }
    const attempt = await tryBackend(name);
    tried.push(attempt);
    if (attempt.ok) return { name, tried };
  }
  throw new BackendError(forced ? `backend "${forced}" could not be initialised` : 'no tensor backend could be initialised', tried);
}

/** One line for logs: `backend wasm (skipped tensorflow-gpu: Cannot find module ...; ...)`. */
export function describeBackend(choice: BackendChoice): string {
  const skipped = choice.tried.filter((t) => !t.ok).map((t) => `${t.name}: ${t.error}`);
  return `backend ${choice.name}${skipped.length ? ` (skipped ${skipped.join('; ')})` : ''}`;
}
