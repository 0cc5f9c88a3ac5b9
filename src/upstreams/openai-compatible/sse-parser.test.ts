import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseSseStream, type SseMessage, SseParser } from './sse-parser.js';

const fixturesDir = join(import.meta.dirname, 'fixtures');
const sseFixtures = readdirSync(fixturesDir).filter((name) => name.endsWith('.sse'));

function parseChunks(chunks: Array<Uint8Array | string>): SseMessage[] {
  const parser = new SseParser();
  const out: SseMessage[] = [];
  for (const chunk of chunks) parser.feed(chunk, out);
  parser.end();
  return out;
}

function parseText(text: string): SseMessage[] {
  return parseChunks([Buffer.from(text, 'utf8')]);
}

function message(data: string, event = 'message', id = '', retry?: number): SseMessage {
  return { event, data, id, retry };
}

/**
 * A deliberately naive reading of the fixtures (blocks separated by a blank line, only `data:` lines and comments),
 * independent of the parser under test.
 */
function naiveDataMessages(text: string): string[] {
  const blocks = text.split('\n\n');
  blocks.pop(); // whatever follows the last blank line is not a complete event
  const result: string[] = [];
  for (const block of blocks) {
    const data = block
      .split('\n')
      .filter((line) => line.startsWith('data: '))
      .map((line) => line.slice('data: '.length));
    if (data.length > 0) result.push(data.join('\n'));
  }
  return result;
}

describe('SseParser', () => {
  it('joins multi-line data with \\n and names events', () => {
    expect(parseText('data: a\ndata: b\n\nevent: ping\ndata: {}\n\n')).toEqual([
      message('a\nb'),
      message('{}', 'ping'),
    ]);
  });

  it('ignores comments and unknown fields, and strips exactly one space after the colon', () => {
    expect(parseText(': hello\nfoo: bar\ndata:x\n\ndata:  two spaces\n\n')).toEqual([
      message('x'),
      message(' two spaces'),
    ]);
  });

  it('treats a field name without a colon as an empty value', () => {
    expect(parseText('data\n\ndata\ndata\n\n')).toEqual([message(''), message('\n')]);
  });

  it('does not dispatch blocks without data, and resets the event name after each block', () => {
    expect(parseText('event: lonely\n\ndata: after\n\n')).toEqual([message('after')]);
  });

  it('keeps the last event id across events, ignores ids with NUL, and reads retry', () => {
    expect(
      parseText('id: 7\ndata: a\n\ndata: b\n\nid: x\0y\nretry: 1500\ndata: c\n\nretry: soon\ndata: d\n\n'),
    ).toEqual([
      message('a', 'message', '7'),
      message('b', 'message', '7'),
      message('c', 'message', '7', 1500),
      message('d', 'message', '7'),
    ]);
  });

  it('accepts \\r\\n, \\r and \\n line endings, mixed', () => {
    const expected = [message('one'), message('two', 'named'), message('three\nfour')];
    expect(parseText('data: one\r\n\r\nevent: named\rdata: two\r\rdata: three\ndata: four\r\n\n')).toEqual(expected);
  });

  it('treats a \\r\\n split across chunks as one line ending', () => {
    expect(parseChunks(['data: a\r', '\ndata: b\r', '\n\r', '\n'])).toEqual([message('a\nb')]);
    // A lone \r at the end of a chunk followed by a non-\n is a line ending of its own.
    expect(parseChunks(['data: a\r', '\r', 'data: b\r', 'data: c\n\n'])).toEqual([message('a'), message('b\nc')]);
  });

  it('discards an event that the stream ends before terminating', () => {
    expect(parseText('data: complete\n\ndata: no blank line\n')).toEqual([message('complete')]);
    expect(parseText('data: complete\n\ndata: {"partial')).toEqual([message('complete')]);
  });

  it('strips a leading byte-order mark, from bytes or text', () => {
    expect(parseChunks([new Uint8Array([0xef, 0xbb]), new Uint8Array([0xbf]), 'data: x\n\n'])).toEqual([message('x')]);
    expect(parseChunks(['\ufeffdata: y\n\n'])).toEqual([message('y')]);
  });

  it('decodes multi-byte UTF-8 characters split across chunks', () => {
    const bytes = Buffer.from('data: 你好 👋\n\n', 'utf8');
    const pieces = Array.from(bytes, (byte) => new Uint8Array([byte]));
    expect(parseChunks(pieces)).toEqual([message('你好 👋')]);
  });

  it('can be reused after end()', () => {
    const parser = new SseParser();
    const out: SseMessage[] = [];
    parser.feed('data: partial', out);
    parser.end();
    parser.feed('data: fresh\n\n', out);
    expect(out).toEqual([message('fresh')]);
  });
});

describe('SseParser on the fixtures', () => {
  it('has fixtures to test', () => {
    expect(sseFixtures.length).toBeGreaterThanOrEqual(8);
  });

  for (const name of sseFixtures) {
    it(`${name}: same messages for a split at every byte offset and for one byte at a time`, () => {
      const bytes = readFileSync(join(fixturesDir, name));
      const expected = naiveDataMessages(bytes.toString('utf8'));
      expect(expected.length).toBeGreaterThan(0);
      const whole = parseChunks([bytes]).map((parsed) => parsed.data);
      expect(whole).toEqual(expected);
      for (let offset = 1; offset < bytes.length; offset++) {
        const split = parseChunks([bytes.subarray(0, offset), bytes.subarray(offset)]);
        if (split.length !== expected.length || split.some((parsed, index) => parsed.data !== expected[index])) {
          expect.fail(`${name}: split at byte ${offset} gave different messages`);
        }
      }
      const bytewise = parseChunks(Array.from(bytes, (byte) => new Uint8Array([byte]))).map((parsed) => parsed.data);
      expect(bytewise).toEqual(expected);
    });
  }

  for (const [label, ending] of [
    ['\\r\\n', '\r\n'],
    ['\\r', '\r'],
  ] as const) {
    for (const name of ['openai-chat-stream.sse', 'deepseek-reasoning-stream.sse']) {
      it(`${name} with ${label} line endings: same messages at every split offset`, () => {
        const text = readFileSync(join(fixturesDir, name), 'utf8');
        const expected = naiveDataMessages(text);
        const bytes = Buffer.from(text.replaceAll('\n', ending), 'utf8');
        for (let offset = 1; offset < bytes.length; offset++) {
          const split = parseChunks([bytes.subarray(0, offset), bytes.subarray(offset)]);
          if (split.length !== expected.length || split.some((parsed, index) => parsed.data !== expected[index])) {
            expect.fail(`${name} (${label}): split at byte ${offset} gave different messages`);
          }
        }
      });
    }
  }
});

describe('SseParser properties', () => {
  it('parses any serialized events the same way however the bytes are chunked', () => {
    const line = fc.string({ unit: 'grapheme', maxLength: 20 }).filter((text) => !/[\r\n]/.test(text));
    const event = fc.record({
      name: fc.option(fc.stringMatching(/^[a-z]{1,8}$/), { nil: undefined }),
      lines: fc.array(line, { minLength: 1, maxLength: 3 }),
    });
    fc.assert(
      fc.property(
        fc.array(event, { minLength: 1, maxLength: 6 }),
        fc.constantFrom('\n', '\r\n', '\r'),
        fc.array(fc.integer({ min: 1, max: 12 }), { minLength: 1, maxLength: 40 }),
        (events, ending, cuts) => {
          let text = '';
          for (const item of events) {
            if (item.name !== undefined) text += `event: ${item.name}${ending}`;
            for (const dataLine of item.lines) text += `data: ${dataLine}${ending}`;
            text += ending;
          }
          const bytes = Buffer.from(text, 'utf8');
          const chunks: Uint8Array[] = [];
          let position = 0;
          for (let index = 0; position < bytes.length; index++) {
            const size = cuts[index % cuts.length]!;
            chunks.push(bytes.subarray(position, position + size));
            position += size;
          }
          const parsed = parseChunks(chunks);
          expect(parsed).toEqual(events.map((item) => message(item.lines.join('\n'), item.name ?? 'message')));
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('parseSseStream', () => {
  it('yields the messages of an async byte stream in order', async () => {
    async function* source(): AsyncGenerator<Uint8Array> {
      yield Buffer.from('data: 1\n\nda');
      yield Buffer.from('ta: 2\n');
      yield Buffer.from('\ndata: 3\n\n');
    }
    const received: string[] = [];
    for await (const parsed of parseSseStream(source())) received.push(parsed.data);
    expect(received).toEqual(['1', '2', '3']);
  });
});
