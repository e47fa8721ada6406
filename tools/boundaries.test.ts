import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * Package boundaries (STYLE.md §2): the allowed dependency edges between workspace projects, no imports of another
 * package's `src/`, and every imported workspace package declared in package.json.
 */
const root = path.resolve(__dirname, '..');

const ALLOWED: Record<string, string[]> = {
  core: [],
  ot: ['core'],
  losses: ['core'],
  'unet-gating': ['core'],
  datasets: ['core'],
  router: ['core', 'ot', 'unet-gating'],
  eval: ['core', 'unet-gating', 'datasets'],
  sampler: ['core', 'unet-gating', 'router', 'eval'],
  trainer: ['core', 'unet-gating', 'router', 'ot', 'losses', 'datasets', 'eval'],
};

const projectDir = (name: string): string => (name === 'trainer' || name === 'sampler' ? path.join(root, 'apps', name) : path.join(root, 'packages', name));

function sourceFiles(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(p);
    return /\.ts$/.test(e.name) ? [p] : [];
  });
}

function importsOf(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  const out: string[] = [];
  const re = /(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)|require\(\s*['"]([^'"]+)['"]\s*\)/g;
  for (let m = re.exec(text); m; m = re.exec(text)) out.push((m[1] ?? m[2] ?? m[3])!);
  return out;
}

describe('package boundaries', () => {
  for (const [project, allowed] of Object.entries(ALLOWED)) {
    it(`${project} imports only ${allowed.join(', ') || 'no workspace package'}`, () => {
      const dir = projectDir(project);
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };
      const problems: string[] = [];
      for (const file of sourceFiles(path.join(dir, 'src'))) {
        const isTest = /\.test\.ts$/.test(file);
        for (const spec of importsOf(file)) {
          const rel = path.relative(root, file);
          const m = /^@aptp\/([^/]+)(\/.*)?$/.exec(spec);
          if (m) {
            const target = m[1]!;
            if (target !== project && !allowed.includes(target)) problems.push(`${rel}: imports @aptp/${target} (not an allowed edge)`);
            if (m[2] && !(target === 'core' && m[2] === '/testing')) problems.push(`${rel}: deep import ${spec}`);
            if (m[2] === '/testing' && !isTest && project !== 'core') problems.push(`${rel}: @aptp/core/testing outside a test`);
            if (target !== project && !isTest && !(pkg.dependencies && `@aptp/${target}` in pkg.dependencies)) problems.push(`${rel}: @aptp/${target} missing from package.json dependencies`);
          } else if (spec.startsWith('.')) {
            const resolved = path.resolve(path.dirname(file), spec);
            if (!resolved.startsWith(dir + path.sep)) problems.push(`${rel}: relative import leaves the project: ${spec}`);
          }
        }
      }
      expect(problems).toEqual([]);
    });
  }

  it('every project has its own version, build/test/typecheck scripts, README and src/index.ts', () => {
    for (const project of Object.keys(ALLOWED)) {
      const dir = projectDir(project);
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { version?: string; scripts?: Record<string, string> };
      expect(pkg.version).toMatch(/^\d+\.\d+\.\d+/);
      expect(Object.keys(pkg.scripts ?? {})).toEqual(expect.arrayContaining(['build', 'test', 'typecheck']));
      expect(fs.existsSync(path.join(dir, 'README.md'))).toBe(true);
      expect(fs.existsSync(path.join(dir, 'src', 'index.ts'))).toBe(true);
    }
  });

  it('the lockfile has no native tfjs packages (their install scripts download libtensorflow)', () => {
    const lock = fs.readFileSync(path.join(root, 'package-lock.json'), 'utf8');
    expect(lock).not.toMatch(/node_modules\/@tensorflow\/tfjs-node/);
  });
});
