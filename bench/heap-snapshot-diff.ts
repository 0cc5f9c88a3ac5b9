/**
 * What a process holds more in one heap snapshot than in another, by kind of object: `rss-streams --heap-snapshots DIR`
 * writes one before the streams open and one while they are held, so the difference divided by the streams is what
 * one open stream costs in the JavaScript heap, object by object.
 *
 * `node dist/bench/heap-snapshot-diff.js BEFORE.heapsnapshot AFTER.heapsnapshot --per 2000`
 *
 * Chrome's DevTools compare snapshots too, but only in a browser window; this prints the comparison as a table.
 */
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { Command } from 'commander';
import { exitQuietlyWhenOutputCloses } from '../src/cli/closed-output.js';
import { positiveInteger } from './cli-numbers.js';

/** The parts of V8's `.heapsnapshot` format read here. */
interface HeapSnapshotFile {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

/** Objects of one kind in one snapshot: how many, and their own (shallow) size in bytes. */
export interface HeapGroup {
  count: number;
  bytes: number;
}

/**
 * The kind an object is counted under: its constructor for objects, its function name for closures; strings, code and
 * heap numbers are each counted as one kind whatever their names (a string's name is its text).
 */
function kindOf(type: string, name: string): string | undefined {
  switch (type) {
    case 'object':
      return name;
    case 'closure':
      return `${name || '(anonymous)'}()`;
    case 'string':
    case 'concatenated string':
    case 'sliced string':
      return `(${type})`;
    case 'code':
      return '(code)';
    case 'number':
      return '(heap number)';
    case 'synthetic':
      return undefined;
    default:
      return `(${type}) ${name}`;
  }
}

/** Groups a snapshot's nodes by kind. */
export function groupHeapSnapshot(file: HeapSnapshotFile): Map<string, HeapGroup> {
  const fields = file.snapshot.meta.node_fields;
  const types = file.snapshot.meta.node_types[0];
  const width = fields.length;
  const typeAt = fields.indexOf('type');
  const nameAt = fields.indexOf('name');
  const sizeAt = fields.indexOf('self_size');
  const groups = new Map<string, HeapGroup>();
  for (let offset = 0; offset < file.nodes.length; offset += width) {
    const kind = kindOf(types[file.nodes[offset + typeAt]!] ?? '?', file.strings[file.nodes[offset + nameAt]!] ?? '');
    if (kind === undefined) continue;
    const group = groups.get(kind) ?? { count: 0, bytes: 0 };
    group.count += 1;
    group.bytes += file.nodes[offset + sizeAt]!;
    groups.set(kind, group);
  }
  return groups;
}

/** One kind's growth from `before` to `after`. */
export interface HeapGrowth {
  kind: string;
  count: number;
  bytes: number;
}

/** The kinds that grew (or shrank) from `before` to `after`, the largest change in bytes first. */
export function heapGrowth(before: Map<string, HeapGroup>, after: Map<string, HeapGroup>): HeapGrowth[] {
  const kinds = new Set([...before.keys(), ...after.keys()]);
  const growth: HeapGrowth[] = [];
  for (const kind of kinds) {
    const was = before.get(kind) ?? { count: 0, bytes: 0 };
    const is = after.get(kind) ?? { count: 0, bytes: 0 };
    if (is.bytes !== was.bytes || is.count !== was.count) {
      growth.push({ kind, count: is.count - was.count, bytes: is.bytes - was.bytes });
    }
  }
  return growth.sort((a, b) => Math.abs(b.bytes) - Math.abs(a.bytes));
}

function total(groups: Map<string, HeapGroup>): number {
  let bytes = 0;
  for (const group of groups.values()) bytes += group.bytes;
  return bytes;
}

async function main(): Promise<void> {
  const program = new Command()
    .name('heap-snapshot-diff')
    .description('What a process holds more in one heap snapshot than in another, by kind of object.')
    .argument('<before>', 'the earlier .heapsnapshot')
    .argument('<after>', 'the later .heapsnapshot')
    .option('--per <n>', 'divide by n (the streams held) and show bytes and objects per one', positiveInteger, 1)
    .option('--top <n>', 'rows', positiveInteger, 40)
    .parse();
  const [beforePath, afterPath] = program.args as [string, string];
  const { per, top } = program.opts<{ per: number; top: number }>();
  const read = (file: string) => groupHeapSnapshot(JSON.parse(readFileSync(file, 'utf8')) as HeapSnapshotFile);
  const before = read(beforePath);
  const after = read(afterPath);
  const growth = heapGrowth(before, after);
  exitQuietlyWhenOutputCloses();
  const grown = total(after) - total(before);
  process.stdout.write(
    `heap ${(total(before) / 1_048_576).toFixed(1)} → ${(total(after) / 1_048_576).toFixed(1)} MiB: ` +
      `${grown} bytes more, ${(grown / per).toFixed(0)} per one of ${per}\n\n`,
  );
  process.stdout.write('| kind | objects per one | bytes per one | share |\n| --- | ---: | ---: | ---: |\n');
  for (const entry of growth.slice(0, top)) {
    const share = grown === 0 ? 0 : (entry.bytes / grown) * 100;
    process.stdout.write(
      `| ${entry.kind.replaceAll('|', '\\|')} | ${(entry.count / per).toFixed(2)} | ${(entry.bytes / per).toFixed(0)} | ${share.toFixed(1)}% |\n`,
    );
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error: unknown) => {
    process.stderr.write(`heap-snapshot-diff: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  });
}
