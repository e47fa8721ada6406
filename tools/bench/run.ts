import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * Runs the built benchmarks (`dist/bench/<name>.bench.js`), each in its own Node process (fresh tfjs state and
 * memory). Usage: `node dist/bench/run.js [name …] [--flags for the benchmarks]`; without names every benchmark runs.
 * `--list` prints the names.
 */
function main(): number {
  const argv = process.argv.slice(2);
  const available = fs
    .readdirSync(__dirname)
    .filter((f) => f.endsWith('.bench.js'))
    .map((f) => f.slice(0, -'.bench.js'.length))
    .sort();
  if (argv.includes('--list')) {
    process.stdout.write(`${available.join('\n')}\n`);
    return 0;
  }
  const firstFlag = argv.findIndex((x) => x.startsWith('-'));
  const names = firstFlag < 0 ? argv : argv.slice(0, firstFlag);
  const flags = firstFlag < 0 ? [] : argv.slice(firstFlag);
  const unknown = names.filter((n) => !available.includes(n));
  if (unknown.length > 0) {
    process.stderr.write(`unknown benchmark(s) ${unknown.join(', ')}; available: ${available.join(', ')}\n`);
    return 2;
  }
  let failed = 0;
  for (const name of names.length > 0 ? names : available) {
    const r = spawnSync(process.execPath, [path.join(__dirname, `${name}.bench.js`), ...flags], { stdio: 'inherit' });
    if (r.status !== 0) {
      process.stderr.write(`benchmark ${name} failed (exit ${r.status ?? r.signal})\n`);
      failed++;
    }
  }
  return failed > 0 ? 1 : 0;
}

process.exitCode = main();
