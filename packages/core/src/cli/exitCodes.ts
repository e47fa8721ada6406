import { AptpError, BackendError, ConfigError, InputError, NumericError, ShapeError } from '../errors';

/** Process exit codes shared by every command (STYLE.md §3 CLI). */
export const EXIT = {
  ok: 0,
  bug: 1,
  usage: 2,
  input: 3,
  numeric: 4,
  sigint: 130,
  sigterm: 143,
} as const;

export function exitCodeFor(err: unknown): number {
  if (err instanceof ConfigError) return EXIT.usage;
  if (err instanceof NumericError) return EXIT.numeric;
  if (err instanceof InputError || err instanceof ShapeError || err instanceof BackendError) return EXIT.input;
  if (err instanceof AptpError) return EXIT.input;
  return EXIT.bug;
}
