/**
 * The one error family of the project (STYLE.md §3 "Errors"). Every thrown error is an `AptpError` subclass that
 * says which file, which field, what was expected and what was found, in one line.
 */
export interface AptpErrorDetails {
  /** Machine-readable code, e.g. `E_SHAPE`, `E_CONFIG_FIELD`. */
  code?: string;
  /** The file the problem is in (path as given by the user). */
  file?: string;
  /** The field, tensor name or argument that is wrong. */
  field?: string;
  expected?: unknown;
  found?: unknown;
  cause?: unknown;
}

function show(v: unknown): string {
  if (typeof v === 'string') return v;
  try {
    return JSON.stringify(v);
  } catch {
    return String(v);
  }
}

export class AptpError extends Error {
  readonly code: string;
  readonly file?: string;
  readonly field?: string;
  readonly expected?: unknown;
  readonly found?: unknown;

  constructor(message: string, details: AptpErrorDetails = {}) {
    const where = [details.file, details.field].filter((s) => s !== undefined && s !== '').join(': ');
    const parts = [where, message].filter((s) => s !== '');
    let text = parts.join(': ');
    if (details.expected !== undefined) text += `: expected ${show(details.expected)}`;
    if (details.found !== undefined) text += `${details.expected !== undefined ? ',' : ':'} found ${show(details.found)}`;
    super(text, details.cause !== undefined ? { cause: details.cause } : undefined);
    this.name = new.target.name;
    this.code = details.code ?? 'E_APTP';
    this.file = details.file;
    this.field = details.field;
    this.expected = details.expected;
    this.found = details.found;
  }
}

/** A configuration value is invalid or unsupported (config.json, YAML, CLI flags). Exit code 2. */
export class ConfigError extends AptpError {}
/** Input data or a model file is missing, unreadable or malformed. Exit code 3. */
export class InputError extends AptpError {}
/** A tensor has the wrong shape. Exit code 3. */
export class ShapeError extends AptpError {}
/** A NaN or Inf appeared where a finite number is required. Exit code 4. */
export class NumericError extends AptpError {}

export interface BackendAttempt {
  name: string;
  ok: boolean;
  error?: string;
}

/** No tensor backend could be initialised; lists every backend tried and why it failed. Exit code 3. */
export class BackendError extends AptpError {
  readonly tried: BackendAttempt[];
  constructor(message: string, tried: BackendAttempt[], details: AptpErrorDetails = {}) {
    const list = tried.map((t) => `${t.name}: ${t.ok ? 'ok' : t.error ?? 'failed'}`).join('; ');
    super(`${message} (tried ${list || 'nothing'})`, { code: 'E_BACKEND', ...details });
    this.tried = tried;
  }
}

/** Wraps an unknown thrown value into an `AptpError` without losing it. */
export function asAptpError(err: unknown, details: AptpErrorDetails = {}): AptpError {
  if (err instanceof AptpError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new AptpError(message, { ...details, cause: err });
}
