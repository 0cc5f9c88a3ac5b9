import { describe, expect, it } from 'vitest';
import { countPromptTokens } from '../metering/token-counter.js';
import { readBatchInput, ValidationStopped } from './batch-input.js';
import type { NewBatchLine } from './batch-store.js';

const chat = (customId: string, maxTokens = 5) =>
  JSON.stringify({
    custom_id: customId,
    method: 'POST',
    url: '/v1/chat/completions',
    body: { model: 'm', messages: [{ role: 'user', content: `hi ${customId}` }], max_tokens: maxTokens },
  });

/** Feeds `text` in chunks of `size` bytes, so lines straddle chunk boundaries. */
async function* chunks(text: string | Buffer, size: number): AsyncGenerator<Buffer> {
  const buffer = Buffer.from(text);
  for (let start = 0; start < buffer.length; start += size) yield buffer.subarray(start, start + size);
}

async function read(text: string | Buffer, size = 7, maxLineBytes = 400, maxLines = 100) {
  const lines: NewBatchLine[] = [];
  const summary = await readBatchInput(chunks(text, size), {
    batchId: 'batch_x',
    endpoint: '/v1/chat/completions',
    maxLineBytes,
    maxLines,
    onLines: async (batch) => {
      lines.push(...batch);
    },
  });
  return { summary, lines };
}

describe('readBatchInput', () => {
  it('splits lines across chunk boundaries, skips blank lines and estimates tokens', async () => {
    const { summary, lines } = await read(`${chat('a')}\n\n${chat('b', 9)}\r\n${chat('c')}`, 5);
    expect(summary).toEqual({ total: 3, valid: 3, model: 'm', failure: null });
    expect(lines.map((line) => [line.lineIndex, line.customId, line.requestId])).toEqual([
      [0, 'a', 'batch_x_0'],
      [1, 'b', 'batch_x_1'],
      [2, 'c', 'batch_x_2'],
    ]);
    const body = JSON.parse(lines[1]!.body!);
    expect(lines[1]!.estimatedTokens).toBe(countPromptTokens('chat', body) + 9);
  });

  it('estimates a line with a long prompt (counted on a worker thread) like a short one', async () => {
    const long = chat(`x${' yz'.repeat(20_000)}`, 7);
    const { lines } = await read(`${chat('a')}\n${long}\n`, 4096, 200_000);
    const body = JSON.parse(lines[1]!.body!);
    expect(lines[1]!.estimatedTokens).toBe(countPromptTokens('chat', body) + 7);
    expect(lines[1]!.estimatedTokens).toBeGreaterThan(20_000);
  });

  it('ignores a UTF-8 byte order mark at the start of the file, even split across chunks', async () => {
    const bom = Buffer.from([0xef, 0xbb, 0xbf]);
    for (const size of [1, 2, 7, 4096]) {
      const { summary, lines } = await read(Buffer.concat([bom, Buffer.from(`${chat('a')}\r\n${chat('b')}\n`)]), size);
      expect(summary).toEqual({ total: 2, valid: 2, model: 'm', failure: null });
      expect(lines.map((line) => [line.customId, line.state])).toEqual([
        ['a', 'pending'],
        ['b', 'pending'],
      ]);
    }
    // Only at the start: a mark inside the file is the line's own content.
    const { lines } = await read(`${chat('a')}\n\uFEFF${chat('b')}\n`);
    expect(lines.map((line) => line.error?.code ?? null)).toEqual([null, 'invalid_json_line']);
  });

  it('refuses a line that is not UTF-8 rather than running it with its bytes replaced', async () => {
    const broken = Buffer.from(chat('b').replace('hi', 'hi \u0001'));
    // 0x01 → 0xff: a byte no UTF-8 text holds, inside the line's content.
    broken[broken.indexOf(0x01)] = 0xff;
    const text = Buffer.concat([Buffer.from(`${chat('a')}\n`), broken, Buffer.from(`\n${chat('c')}\n`)]);
    const { summary, lines } = await read(text, 16);
    expect(summary.valid).toBe(2);
    expect(lines.map((line) => line.error?.code ?? null)).toEqual([null, 'invalid_encoding', null]);
  });

  it('refuses an over-long line without failing its neighbours', async () => {
    const long = chat(`x${'y'.repeat(500)}`);
    const { summary, lines } = await read(`${chat('a')}\n${long}\n${chat('b')}\n`, 64, 400);
    expect(summary.valid).toBe(2);
    expect(lines.map((line) => line.state)).toEqual(['pending', 'failed', 'pending']);
    expect(lines[1]!.error?.code).toBe('line_too_large');
  });

  it('fails binary input, an empty file and too many lines as a whole', async () => {
    const binary = Buffer.from(Array.from({ length: 3000 }, (_, index) => (index * 37) % 256));
    expect((await read(binary, 512)).summary.failure?.code).toBe('invalid_file_format');
    expect((await read('\n\n')).summary.failure?.code).toBe('empty_file');
    const many = Array.from({ length: 4 }, (_, index) => chat(`c${index}`)).join('\n');
    expect((await read(many, 50, 400, 3)).summary.failure?.code).toBe('too_many_requests');
  });

  it('checks each line: JSON, custom_id (present, unique), method, url, endpoint, body', async () => {
    const text = [
      chat('ok'),
      'not json',
      '[1,2]',
      JSON.stringify({ method: 'POST', url: '/v1/chat/completions', body: {} }),
      chat('ok'),
      chat('get').replace('"POST"', '"GET"'),
      chat('emb').replace('/v1/chat/completions', '/v1/embeddings'),
      chat('img').replace('/v1/chat/completions', '/v1/images'),
      JSON.stringify({ custom_id: 'str', method: 'POST', url: '/v1/chat/completions', body: 'x' }),
      JSON.stringify({ custom_id: 'nomsg', method: 'POST', url: '/v1/chat/completions', body: { model: 'm' } }),
      JSON.stringify({
        custom_id: 'stream',
        method: 'POST',
        url: '/v1/chat/completions',
        body: { model: 'm', messages: [{ role: 'user', content: 'x' }], stream: true },
      }),
    ].join('\n');
    const { summary, lines } = await read(text, 13);
    expect(summary.valid).toBe(1);
    expect(summary.failure).toBeNull();
    expect(lines.map((line) => line.error?.code ?? 'ok')).toEqual([
      'ok',
      'invalid_json_line',
      'invalid_json_line',
      'missing_custom_id',
      'duplicate_custom_id',
      'invalid_method',
      'mismatched_endpoint',
      'invalid_url',
      'invalid_body',
      'invalid_body',
      'invalid_body',
    ]);
  });
});

describe('readBatchInput on a large file', () => {
  const large = Array.from({ length: 20_000 }, (_, index) => chat(`line-${index}`)).join('\n');
  const options = {
    batchId: 'batch_big',
    endpoint: '/v1/chat/completions' as const,
    maxLineBytes: 400,
    maxLines: 50_000,
    onLines: async () => {},
  };

  it('gives the event loop a turn every few milliseconds, so online requests are not held up behind it', async () => {
    // Callbacks of the check phase run only when the loop turns: awaiting settled promises never lets them.
    let turns = 0;
    let counting = true;
    const count = () => {
      turns++;
      if (counting) setImmediate(count);
    };
    setImmediate(count);
    const summary = await readBatchInput(chunks(large, 1 << 20), options);
    counting = false;
    expect(summary.valid).toBe(20_000);
    // 20,000 lines take far more than one 5 ms slice (hundreds of ms): the loop turned many times, not once at the end.
    expect(turns).toBeGreaterThan(10);
  });

  it('gives up between slices when asked to stop', async () => {
    let asked = 0;
    const stopped = readBatchInput(chunks(large, 1 << 20), {
      ...options,
      stopping: () => {
        asked++;
        return asked > 1;
      },
    });
    await expect(stopped).rejects.toBeInstanceOf(ValidationStopped);
    expect(asked).toBe(2);
  });
});
