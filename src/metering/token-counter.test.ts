import { writeFileSync } from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import o200k, { encode } from 'gpt-tokenizer/encoding/o200k_base';
import { describe, expect, it } from 'vitest';
import { temporaryDirectory } from '../../test/support/temporary-directory.js';
import { BpeRanks, shippedRanksFile } from './bpe-ranks.js';
import {
  countPromptTokens,
  countTextTokens,
  GrowingTextCounter,
  IMAGE_PART_TOKENS,
  longPieceBytes,
  o200kSplitPattern,
} from './token-counter.js';

const tokens = (text: string) => encode(text, { disallowedSpecial: new Set() }).length;

describe('countTextTokens', () => {
  it('counts o200k_base tokens', () => {
    expect(countTextTokens('')).toBe(0);
    expect(countTextTokens('Hello')).toBe(1);
    expect(countTextTokens('hello world')).toBe(2);
    const long = 'The quick brown fox jumps over the lazy dog. Ünïcödé and 数字 1234567 ✓';
    expect(countTextTokens(long)).toBe(tokens(long));
  });

  it('counts special-token markers as plain text instead of throwing', () => {
    expect(countTextTokens('a <|endoftext|> b')).toBeGreaterThan(3);
    expect(countTextTokens('a <|endoftext|> b')).toBe(tokens('a <|endoftext|> b'));
  });

  it("splits text with gpt-tokenizer's o200k pattern", () => {
    const library = Reflect.get(o200k, 'bytePairEncodingCoreProcessor') as { tokenSplitRegex: RegExp };
    expect(o200kSplitPattern).toBe(library.tokenSplitRegex.source);
    expect(library.tokenSplitRegex.flags).toBe('gu');
  });

  it('counts any text as gpt-tokenizer does', () => {
    // Code points from every plane, lone surrogates included, mixed with the pattern's edge cases. U+FEFF is left out:
    // gpt-tokenizer decodes its ranks with a TextDecoder that drops a leading byte-order mark, so it cannot find that
    // token (see the next test).
    const codePoint = fc
      .oneof(fc.integer({ min: 0, max: 0x7f }), fc.integer({ min: 0x80, max: 0x10ffff }))
      .filter((code) => code !== 0xfeff)
      .map((code) => String.fromCodePoint(code));
    const part = fc.oneof(codePoint, fc.constantFrom(...edgyCharacters), fc.constantFrom(' the', ' Hello', '数字'));
    const text = fc.array(part, { maxLength: 60 }).map((parts) => parts.join(''));
    fc.assert(
      fc.property(text, (sample) => {
        expect(countTextTokens(sample)).toBe(tokens(sample));
      }),
      { numRuns: 20_000 },
    );
  });

  it('merges pieces up to the long-piece threshold as gpt-tokenizer does', () => {
    // Single pieces of letters that are mostly not one token: the short merge's every step.
    const letters = fc.array(fc.constantFrom(...'qxzjkvwbé'), { minLength: 2, maxLength: longPieceBytes / 2 });
    fc.assert(
      fc.property(letters, (characters) => {
        const piece = characters.join('');
        expect(countTextTokens(piece)).toBe(tokens(piece));
      }),
      { numRuns: 5_000 },
    );
  });

  it('counts a byte-order mark as the one token o200k_base has for it', () => {
    const ranks = BpeRanks.fromTiktokenFile(shippedRanksFile('o200k_base'));
    expect(ranks.rank(Buffer.from('\uFEFF'), 0, 3)).toBeGreaterThanOrEqual(0);
    expect(countTextTokens('\uFEFF')).toBe(1);
    expect(tokens('\uFEFF')).toBe(2);
  });
});

describe('BpeRanks', () => {
  const withFile = (text: string, check: (file: string) => void) => {
    const file = path.join(temporaryDirectory('tollgate-ranks-'), 'test.tiktoken');
    writeFileSync(file, text);
    check(file);
  };
  const b64 = (text: string) => Buffer.from(text).toString('base64');

  it('finds every token of a file by its bytes, and nothing else', () => {
    withFile(`${b64('a')} 0\n${b64('b')} 1\n${b64('ab')} 2\n${b64('bab')} 3\n`, (file) => {
      const ranks = BpeRanks.fromTiktokenFile(file);
      expect(ranks.size).toBe(4);
      expect(ranks.maxTokenBytes).toBe(3);
      const bytes = Buffer.from('xbabx');
      expect(ranks.rank(bytes, 1, 4)).toBe(3);
      expect(ranks.rank(bytes, 2, 4)).toBe(2);
      expect(ranks.rank(bytes, 1, 2)).toBe(1);
      expect(ranks.rank(bytes, 0, 1)).toBe(-1);
      expect(ranks.rank(bytes, 0, 5)).toBe(-1);
      expect(ranks.rank(bytes, 2, 2)).toBe(-1);
    });
  });

  it('decodes every base64 padding and a last line without a newline', () => {
    withFile(`${b64('abc')} 0\n${b64('ab')} 1\n${b64('a')} 2\n${b64('abcd')} 3`, (file) => {
      const ranks = BpeRanks.fromTiktokenFile(file);
      expect(ranks.size).toBe(4);
      for (const [token, rank] of [
        ['abc', 0],
        ['ab', 1],
        ['a', 2],
        ['abcd', 3],
      ] as const) {
        expect(ranks.rank(Buffer.from(token), 0, token.length)).toBe(rank);
      }
    });
  });

  it('refuses a file with a bad line, bad base64, a repeated rank or a gap', () => {
    withFile(`${b64('a')} 0\nnot-a-line\n`, (file) => {
      expect(() => BpeRanks.fromTiktokenFile(file)).toThrow(/:2: not a "base64 rank" line/);
    });
    withFile(`${b64('a')} 0\nYW*= 1\n`, (file) => {
      expect(() => BpeRanks.fromTiktokenFile(file)).toThrow(/:2: not a "base64 rank" line/);
    });
    withFile(`${b64('a')} 0\n${b64('b')} x\n`, (file) => {
      expect(() => BpeRanks.fromTiktokenFile(file)).toThrow(/:2: not a "base64 rank" line/);
    });
    withFile(`${b64('a')} 0\n${b64('b')} 0\n`, (file) => {
      expect(() => BpeRanks.fromTiktokenFile(file)).toThrow(/:2: rank 0 where rank 1 was due/);
    });
    withFile(`${b64('a')} 0\n${b64('b')} 2\n`, (file) => {
      expect(() => BpeRanks.fromTiktokenFile(file)).toThrow(/:2: rank 2 where rank 1 was due/);
    });
  });

  it('holds all of o200k_base', () => {
    const ranks = BpeRanks.fromTiktokenFile(shippedRanksFile('o200k_base'));
    const library = Reflect.get(o200k, 'bytePairEncodingCoreProcessor') as { mergeableBytePairRankCount: number };
    expect(ranks.size).toBe(library.mergeableBytePairRankCount);
    for (const rank of [0, 1, 255, 1000, 100_000, ranks.size - 1]) {
      const bytes = Uint8Array.from(encodeBytes(rank));
      expect(ranks.rank(bytes, 0, bytes.length)).toBe(rank);
    }
  });
});

/** The bytes of one token, from the library's decoder. */
function encodeBytes(rank: number): Uint8Array {
  const library = Reflect.get(o200k, 'bytePairEncodingCoreProcessor') as {
    bytePairRankDecoder: ReadonlyArray<string | readonly number[]>;
  };
  const token = library.bytePairRankDecoder[rank];
  return typeof token === 'string' ? new TextEncoder().encode(token) : Uint8Array.from(token ?? []);
}

// Characters that meet every alternative of the split pattern and its edges: case changes, contractions, digit runs
// (cut at three), punctuation runs, whitespace before a word or a newline, surrogate pairs, combining marks, and a
// special-token marker (counted as plain text).
const edgyCharacters = [
  '<|endoftext|>',
  'a',
  'b',
  'S',
  'T',
  "'",
  's',
  'l',
  'v',
  'e',
  'll',
  're',
  "'s",
  '1',
  '2',
  ' ',
  '  ',
  '\n',
  '\r',
  '\t',
  '!',
  '/',
  '.',
  'é',
  '\u0301',
  '語',
  '😀',
  'x',
];

describe('GrowingTextCounter', () => {
  it('counts every prefix of a growing text exactly as the whole-text count does', () => {
    // Short texts grown a few characters at a time: where a settled piece could still change, it does so within a
    // few characters of the end.
    const chunk = fc.array(fc.constantFrom(...edgyCharacters), { maxLength: 3 }).map((parts) => parts.join(''));
    const growing = fc.array(chunk, { minLength: 1, maxLength: 6 });
    fc.assert(
      fc.property(growing, (chunks) => {
        const counter = new GrowingTextCounter();
        let text = '';
        for (const chunk of chunks) {
          text += chunk;
          expect(counter.count(text)).toBe(countTextTokens(text));
        }
      }),
      { numRuns: 20_000 },
    );
  });

  it('tokenizes only the unsettled end again as the text grows', () => {
    const counter = new GrowingTextCounter();
    const sentence = 'The gateway meters every token it relays. ';
    let text = sentence.repeat(1000);
    counter.count(text);
    text += sentence;
    expect(counter.unsettledLength(text)).toBeLessThan(2 * sentence.length);
    expect(counter.count(text)).toBe(countTextTokens(text));
  });
});

describe('countPromptTokens', () => {
  it('counts chat like OpenAI: 3 per message + role + content (+ name + 1) + 3 priming', () => {
    const body = {
      messages: [
        { role: 'system', content: 'You are terse.' },
        { role: 'user', name: 'ann', content: 'Say this is a test' },
      ],
    };
    const expected =
      3 +
      tokens('system') +
      tokens('You are terse.') +
      3 +
      tokens('user') +
      tokens('ann') +
      1 +
      tokens('Say this is a test') +
      3;
    expect(countPromptTokens('chat', body)).toBe(expected);
    // One user message "Hello": 3 + 1 + 1 + 3, the 8 OpenAI reports for gpt-4o.
    expect(countPromptTokens('chat', { messages: [{ role: 'user', content: 'Hello' }] })).toBe(8);
  });

  it('counts text parts of array content and tool calls, and a floor for each image', () => {
    const body = {
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: 'What is in this image?' },
            { type: 'image_url', image_url: { url: 'https://example.com/a.png' } },
            { type: 'text', text: 'Be brief.' },
          ],
        },
        {
          role: 'assistant',
          content: null,
          tool_calls: [{ id: 'c1', type: 'function', function: { name: 'lookup', arguments: '{"q":"x"}' } }],
        },
      ],
    };
    const expected =
      3 +
      tokens('user') +
      tokens('What is in this image?') +
      tokens('Be brief.') +
      3 +
      tokens('assistant') +
      tokens('lookup') +
      tokens('{"q":"x"}') +
      3 +
      IMAGE_PART_TOKENS;
    expect(countPromptTokens('chat', body)).toBe(expected);
  });

  it('counts the tools (and legacy functions) a request offers as their JSON text', () => {
    const messages = [{ role: 'user', content: 'Weather in Paris?' }];
    const tools = [
      {
        type: 'function',
        function: {
          name: 'get_weather',
          description: 'The forecast for a city, day by day, in the units asked for.',
          parameters: { type: 'object', properties: { city: { type: 'string' }, days: { type: 'integer' } } },
        },
      },
    ];
    const bare = countPromptTokens('chat', { messages });
    expect(countPromptTokens('chat', { messages, tools })).toBe(bare + tokens(JSON.stringify(tools)));
    const functions = tools.map((tool) => tool.function);
    expect(countPromptTokens('chat', { messages, functions })).toBe(bare + tokens(JSON.stringify(functions)));
    expect(countPromptTokens('chat', { messages, tools: [] })).toBe(bare);
  });

  it('is lenient on odd shapes', () => {
    expect(countPromptTokens('chat', {})).toBe(0);
    expect(countPromptTokens('chat', { messages: 'nope' })).toBe(0);
    expect(countPromptTokens('chat', { messages: [null, 42, { content: 7 }] })).toBe(3 * 3 + 3);
    expect(countPromptTokens('completions', { prompt: { a: 1 } })).toBe(0);
    expect(countPromptTokens('embeddings', { input: [null, true, {}] })).toBe(0);
  });

  it('counts completions prompts: string, strings, token ids', () => {
    expect(countPromptTokens('completions', { prompt: 'Once upon a time' })).toBe(tokens('Once upon a time'));
    expect(countPromptTokens('completions', { prompt: ['a b c', 'hello'] })).toBe(tokens('a b c') + tokens('hello'));
    expect(countPromptTokens('completions', { prompt: [1, 2, 3, 4] })).toBe(4);
    expect(countPromptTokens('completions', { prompt: [[1, 2], [3]] })).toBe(3);
  });

  it('counts embeddings inputs: string, strings, token ids', () => {
    expect(countPromptTokens('embeddings', { input: 'The food was delicious' })).toBe(tokens('The food was delicious'));
    expect(countPromptTokens('embeddings', { input: ['one', 'two three'] })).toBe(tokens('one') + tokens('two three'));
    expect(countPromptTokens('embeddings', { input: [[5, 6, 7], [8]] })).toBe(4);
  });
});
