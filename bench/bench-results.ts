/** Where the benches write what they measured: one JSON file per run under `bench/results/`. */
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const resultsDirectory = fileURLToPath(new URL('../../bench/results', import.meta.url));

/** The machine a result was measured on, as the ledger and tokenizer results record it. */
export function machineSummary(): { cpus: number; cpu: string; node: string } {
  return { cpus: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', node: process.version };
}

/**
 * Writes `document` as JSON to `out`, or to `bench/results/<name>-<UTC time to the second>.json` (to the second, so a
 * second run the same day does not replace the first), and says where on stdout. Returns the path.
 */
export async function writeBenchResult(
  name: string,
  out: string | undefined,
  document: unknown,
  at: Date = new Date(),
): Promise<string> {
  const file = out ?? join(resultsDirectory, `${name}-${at.toISOString().slice(0, 19).replaceAll(':', '-')}.json`);
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, `${JSON.stringify(document, null, 2)}\n`);
  process.stdout.write(`wrote ${file}\n`);
  return file;
}
