import fc from 'fast-check';
import { encode } from 'gpt-tokenizer/encoding/o200k_base';
import { describe, expect, it } from 'vitest';
import { countPromptTokens, countTextTokens, GrowingTextCounter } from './token-counter.js';

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
  });
});

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

  it('counts text parts of array content and tool calls; skips images', () => {
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
      3;
    expect(countPromptTokens('chat', body)).toBe(expected);
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
