/**
 * Reads `.cpuprofile` files (written by `node --cpu-prof`, e.g. through `gateway-bench --cpu-prof DIR`) and prints the
 * functions and the packages that took the most CPU time of their own (self time).
 * `node dist/bench/cpu-profile-top.js FILE_OR_DIR [--top 25]` (`--help` for the options).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Command } from 'commander';
import { exitQuietlyWhenOutputCloses } from '../src/cli/closed-output.js';
import { positiveInteger } from './cli-numbers.js';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Self time of one function or package, ms, and its share of all samples. */
export interface SelfTime {
  name: string;
  ms: number;
  percent: number;
}

/** Where a script URL belongs: the npm package, `node:internal`, or the project file. */
function packageOf(url: string): string {
  if (url === '') return '(native / vm)';
  if (url.startsWith('node:')) return 'node: (core)';
  const match = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (match !== null) return match[1]!;
  const project = /\/dist\/(src\/[^/]+)/.exec(url);
  return project !== null ? `tollgate ${project[1]}` : url;
}

/** Self time per function and per package across `profiles`. */
export function summarizeProfiles(profiles: readonly CpuProfile[]): { functions: SelfTime[]; packages: SelfTime[] } {
  const byFunction = new Map<string, number>();
  const byPackage = new Map<string, number>();
  let totalUs = 0;
  for (const profile of profiles) {
    const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
    profile.samples.forEach((id, index) => {
      const node = nodes.get(id);
      const deltaUs = profile.timeDeltas[index] ?? 0;
      if (node === undefined) return;
      const { functionName, url, lineNumber } = node.callFrame;
      const file = url.replace(/^file:\/\/.*?\/(node_modules|dist)\//, '$1/');
      const name = `${functionName || '(anonymous)'} ${file}${url === '' ? '' : `:${lineNumber + 1}`}`;
      byFunction.set(name, (byFunction.get(name) ?? 0) + deltaUs);
      const owner = packageOf(url);
      byPackage.set(owner, (byPackage.get(owner) ?? 0) + deltaUs);
      totalUs += deltaUs;
    });
  }
  const rank = (map: Map<string, number>) =>
    [...map.entries()]
      .sort((left, right) => right[1] - left[1])
      .map(([name, us]) => ({ name, ms: Math.round(us / 100) / 10, percent: Math.round((us / totalUs) * 1000) / 10 }));
  return { functions: rank(byFunction), packages: rank(byPackage) };
}

function readProfiles(path: string): CpuProfile[] {
  const files = statSync(path).isDirectory()
    ? readdirSync(path)
        .filter((name) => name.endsWith('.cpuprofile'))
        .map((name) => join(path, name))
    : [path];
  return files.map((file) => JSON.parse(readFileSync(file, 'utf8')) as CpuProfile);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const program: Command = new Command('cpu-profile-top')
    .description(
      'Prints the functions and packages with the most CPU time of their own (self time) in .cpuprofile files ' +
        '(node --cpu-prof, e.g. through gateway-bench --cpu-prof DIR).',
    )
    .argument('<file-or-dir>', 'a .cpuprofile file, or a directory whose .cpuprofile files are summed')
    .option('--top <n>', 'rows of each table', positiveInteger, 25)
    .parse();
  const path = program.args[0]!;
  const { top } = program.opts<{ top: number }>();
  let profiles: CpuProfile[];
  try {
    profiles = readProfiles(path);
  } catch (error: unknown) {
    program.error(`cannot read ${path}: ${(error as Error).message}`);
  }
  const { functions, packages } = summarizeProfiles(profiles);
  exitQuietlyWhenOutputCloses();
  process.stdout.write('| self % | self ms | function |\n| ---: | ---: | --- |\n');
  for (const entry of functions.slice(0, top))
    process.stdout.write(`| ${entry.percent} | ${entry.ms} | ${entry.name} |\n`);
  process.stdout.write('\n| self % | self ms | package |\n| ---: | ---: | --- |\n');
  for (const entry of packages.slice(0, top))
    process.stdout.write(`| ${entry.percent} | ${entry.ms} | ${entry.name} |\n`);
}
