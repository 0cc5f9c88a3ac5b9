import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

/** Test support: TypeScript sources transpiled to plain ESM in a temporary directory, runnable by `node`. */
export interface TranspiledTree {
  /** The temporary directory; it mirrors the repository layout (`src/…`). */
  readonly directory: string;
  /** The `.js` path of a transpiled source, given relative to the repository root (`src/store/x.ts`). */
  pathOf(sourcePath: string): string;
  /** Deletes the directory. */
  remove(): Promise<void>;
}

const REPOSITORY_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const RELATIVE_IMPORT = /(?:from\s+|import\s*\(\s*|import\s+)'(\.{1,2}\/[^']+)\.js'/g;

/**
 * Transpiles `entries` (paths relative to the repository root) and every module they import by relative path, so a
 * test can run the real code in a child process: Node 20 cannot strip types (`--experimental-strip-types` arrived
 * in 22.6), tsx is not a dependency, and `dist/` may not be built when tests run. Transpiling only, no type check:
 * `tsc --noEmit` covers that. `node_modules` is linked so package imports resolve.
 */
export async function transpileForChild(entries: readonly string[]): Promise<TranspiledTree> {
  const directory = await mkdtemp(join(tmpdir(), 'tollgate-child-'));
  await writeFile(join(directory, 'package.json'), '{"type":"module"}\n');
  await symlink(join(REPOSITORY_ROOT, 'node_modules'), join(directory, 'node_modules'), 'dir');

  const queue = entries.map((entry) => resolve(REPOSITORY_ROOT, entry));
  const done = new Set<string>();
  while (queue.length > 0) {
    const sourcePath = queue.pop()!;
    if (done.has(sourcePath)) continue;
    done.add(sourcePath);
    const source = await readFile(sourcePath, 'utf8');
    for (const match of source.matchAll(RELATIVE_IMPORT)) {
      queue.push(resolve(dirname(sourcePath), `${match[1]}.ts`));
    }
    const output = ts.transpileModule(source, {
      fileName: sourcePath,
      compilerOptions: {
        module: ts.ModuleKind.ESNext,
        target: ts.ScriptTarget.ES2022,
        verbatimModuleSyntax: true,
        esModuleInterop: true,
      },
    });
    const outputPath = join(directory, relative(REPOSITORY_ROOT, sourcePath)).replace(/\.ts$/, '.js');
    await mkdir(dirname(outputPath), { recursive: true });
    await writeFile(outputPath, output.outputText);
  }

  return {
    directory,
    pathOf: (sourcePath) => join(directory, sourcePath).replace(/\.ts$/, '.js'),
    remove: () => rm(directory, { recursive: true, force: true }),
  };
}
