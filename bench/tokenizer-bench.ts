/**
 * The tokenizer benchmark (`npm run bench:tokenizer`): how long counting one long word takes, the case where the
 * o200k split pattern hands the byte-pair merge a single long piece (a run of letters or punctuation with no break).
 * For each kind of run and length, the time of gpt-tokenizer's own merge (quadratic) beside Tollgate's long-piece merge
 * (O(n log n), same tokens), measured in the same run, and their ratio. The library's merge is only run up to
 * `--library-max` characters (it takes hours at a megabyte); longer runs show Tollgate's alone, with ordinary prose of
 * the same length as the yardstick.
 *
 * Then what each tokenizer costs the garbage collector: the heap it holds once loaded and the pause of a full
 * collection with it (median of 9 `gc()` calls), each in a fresh `node --expose-gc` process beside a process that loads
 * neither. Prints Markdown tables and writes `bench/results/tokenizer-<date and time>.json`.
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { encode } from 'gpt-tokenizer/encoding/o200k_base';
import { countTextTokens } from '../src/metering/token-counter.js';
import { machineSummary, writeBenchResult } from './bench-results.js';
import { positiveInteger, positiveIntegerList } from './cli-numbers.js';

/** CLI options. */
interface TokenizerBenchOptions {
  /** Run lengths, characters. Default 1,000 … 8,388,608. */
  lengths: number[];
  /** Longest run the library's merge is timed on, characters. Default 64,000. */
  libraryMax: number;
  /** Timed repetitions per cell; the median is reported. Default 3. */
  repeat: number;
  /** Where the JSON goes. Default `bench/results/tokenizer-<date and time>.json`. */
  out?: string;
}

/** One run kind at one length. */
interface TokenizerRow {
  kind: string;
  characters: number;
  tokens: number;
  tollgateMs: number;
  libraryMs?: number;
  proseMs: number;
}

const KINDS: Record<string, (length: number) => string> = {
  'one letter (x x x …)': (length) => 'x'.repeat(length),
  'random lowercase letters': (length) => randomRun(length, 'abcdefghijklmnopqrstuvwxyz'),
  'random punctuation': (length) => randomRun(length, '!?.-_#*=+'),
};

const PROSE = 'The gateway meters every token it relays, prices it, and bills it exactly. ';

function randomRun(length: number, alphabet: string): string {
  let seed = 12345;
  let text = '';
  for (let index = 0; index < length; index++) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    text += alphabet[seed % alphabet.length];
  }
  return text;
}

function medianMs(repeat: number, work: () => void): number {
  const times: number[] = [];
  for (let run = 0; run < repeat; run++) {
    const started = performance.now();
    work();
    times.push(performance.now() - started);
  }
  times.sort((a, b) => a - b);
  return Math.round((times[Math.floor(times.length / 2)] as number) * 100) / 100;
}

function formatTable(rows: readonly TokenizerRow[]): string {
  const lines = [
    '| run | characters | tokens | Tollgate ms | library ms | library ÷ Tollgate | prose of that length ms |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const row of rows) {
    const library = row.libraryMs === undefined ? '–' : String(row.libraryMs);
    const ratio = row.libraryMs === undefined ? '–' : (row.libraryMs / Math.max(row.tollgateMs, 0.01)).toFixed(1);
    lines.push(
      `| ${row.kind} | ${row.characters.toLocaleString('en')} | ${row.tokens.toLocaleString('en')} | ${row.tollgateMs} | ${library} | ${ratio} | ${row.proseMs} |`,
    );
  }
  return lines.join('\n');
}

/** Heap held and full-collection pause of a fresh process after it loaded one tokenizer and counted once. */
interface HeapRow {
  tokenizer: string;
  heapMiB: number;
  fullGcMs: number;
}

const HEAP_PROBES: Record<string, string> = {
  'neither (node alone)': '',
  "gpt-tokenizer's tables":
    "const { countTokens } = await import('gpt-tokenizer/encoding/o200k_base'); countTokens('hello world');",
  "Tollgate's off-heap ranks": `const { countTextTokens } = await import(${JSON.stringify(
    new URL('../src/metering/token-counter.js', import.meta.url).href,
  )}); countTextTokens('hello world');`,
};

function measureHeap(tokenizer: string, load: string): HeapRow {
  const script = `${load}
globalThis.gc(); globalThis.gc();
const times = [];
for (let run = 0; run < 9; run++) { const started = performance.now(); globalThis.gc(); times.push(performance.now() - started); }
times.sort((a, b) => a - b);
process.stdout.write(JSON.stringify({ heap: process.memoryUsage().heapUsed, gc: times[4] }));`;
  const output = execFileSync(process.execPath, ['--expose-gc', '--input-type=module', '-e', script], {
    cwd: fileURLToPath(new URL('../..', import.meta.url)),
    encoding: 'utf8',
  });
  const measured = JSON.parse(output) as { heap: number; gc: number };
  return {
    tokenizer,
    heapMiB: Math.round((measured.heap / 2 ** 20) * 10) / 10,
    fullGcMs: Math.round(measured.gc * 100) / 100,
  };
}

function formatHeapTable(rows: readonly HeapRow[]): string {
  const lines = ['| loaded | heap used MiB | full GC pause ms |', '| --- | ---: | ---: |'];
  for (const row of rows) lines.push(`| ${row.tokenizer} | ${row.heapMiB} | ${row.fullGcMs} |`);
  return lines.join('\n');
}

async function main(): Promise<void> {
  const options = new Command('tokenizer-bench')
    .description('Time counting one long word: gpt-tokenizer merge vs Tollgate long-piece merge')
    .option(
      '--lengths <list>',
      'run lengths, characters',
      positiveIntegerList,
      [1000, 4000, 16_000, 64_000, 1_048_576, 8_388_608],
    )
    .option('--library-max <n>', 'longest run the library merge is timed on', positiveInteger, 64_000)
    .option('--repeat <n>', 'timed repetitions per cell (median reported)', positiveInteger, 3)
    .option('--out <file>', 'JSON output file')
    .parse()
    .opts<TokenizerBenchOptions>();

  const rows: TokenizerRow[] = [];
  for (const characters of options.lengths) {
    const prose = PROSE.repeat(Math.ceil(characters / PROSE.length)).slice(0, characters);
    const proseMs = medianMs(options.repeat, () => countTextTokens(prose));
    for (const [kind, make] of Object.entries(KINDS)) {
      const text = make(characters);
      const tokens = countTextTokens(text);
      const tollgateMs = medianMs(options.repeat, () => countTextTokens(text));
      const row: TokenizerRow = { kind, characters, tokens, tollgateMs, proseMs };
      if (characters <= options.libraryMax) {
        // One run: the library caches a piece's tokens, so a repetition would time the cache.
        const started = performance.now();
        const libraryTokens = encode(text, { disallowedSpecial: new Set() }).length;
        row.libraryMs = Math.round((performance.now() - started) * 100) / 100;
        if (libraryTokens !== tokens) throw new Error(`token counts differ on ${kind} × ${characters}`);
      }
      rows.push(row);
      process.stderr.write(`${kind} × ${characters}: ${tollgateMs} ms\n`);
    }
  }

  const heap = Object.entries(HEAP_PROBES).map(([tokenizer, load]) => measureHeap(tokenizer, load));

  process.stdout.write(`${formatTable(rows)}\n\n${formatHeapTable(heap)}\n`);
  const machine = machineSummary();
  await writeBenchResult('tokenizer', options.out, { date: new Date().toISOString(), machine, options, rows, heap });
}

await main();
