/**
 * Loads the real LLM serving traces under `../shared/traces/` (see its README) as arrival schedules for the simulated
 * fleet. The Azure 2023 traces cover about one hour of one day: they carry bursts, not a day/night curve.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** One request of a trace. */
export interface TraceRequest {
  /** Arrival time relative to the trace's first request, ms. */
  atMs: number;
  /** Prompt tokens. */
  promptTokens: number;
  /** Output tokens the request produced. */
  outputTokens: number;
}

/** The repository root: the nearest folder above this file that holds `package.json` (works from `dist/` too). */
export function repositoryRoot(): string {
  let folder = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(folder, 'package.json'))) {
    const parent = dirname(folder);
    if (parent === folder) throw new Error('No package.json above the bench folder');
    folder = parent;
  }
  return folder;
}

/** Path of a file in `../shared/traces/` next to the repository. */
export function sharedTracePath(fileName: string): string {
  return resolve(repositoryRoot(), '..', 'shared', 'traces', fileName);
}

/**
 * Parses an Azure LLM inference trace (`TIMESTAMP,ContextTokens,GeneratedTokens`, timestamps like
 * `2023-11-16 18:15:46.6805900`, UTC) into requests sorted by arrival.
 */
export function loadAzureTrace(path: string): TraceRequest[] {
  const lines = readFileSync(path, 'utf8').split(/\r?\n/);
  const header = lines[0]?.trim();
  if (header !== 'TIMESTAMP,ContextTokens,GeneratedTokens') throw new Error(`${path}: unexpected header ${header}`);
  const rows: { at: number; promptTokens: number; outputTokens: number }[] = [];
  for (let index = 1; index < lines.length; index++) {
    const line = lines[index]!.trim();
    if (line === '') continue;
    const [timestamp, context, generated] = line.split(',');
    const at = parseTimestamp(timestamp ?? '');
    const promptTokens = Number(context);
    const outputTokens = Number(generated);
    if (!Number.isFinite(at) || !Number.isInteger(promptTokens) || !Number.isInteger(outputTokens)) {
      throw new Error(`${path}:${index + 1}: cannot parse ${JSON.stringify(line)}`);
    }
    rows.push({ at, promptTokens, outputTokens });
  }
  rows.sort((a, b) => a.at - b.at);
  const first = rows[0]?.at ?? 0;
  return rows.map((row) => ({ atMs: row.at - first, promptTokens: row.promptTokens, outputTokens: row.outputTokens }));
}

function parseTimestamp(text: string): number {
  // Date.parse keeps whole milliseconds only; the trace has 100 ns ticks.
  const [dateTime, fraction = '0'] = text.split('.');
  return Date.parse(`${dateTime?.replace(' ', 'T')}Z`) + Number(`0.${fraction}`) * 1_000;
}
