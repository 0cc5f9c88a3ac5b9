import { describe, expect, it } from 'vitest';
import { truncateToWindow } from './truncation.js';

type Message = Record<string, unknown>;

/** A stand-in for the token counter: one token a character of content, plus 3 a message. */
function countOf(chat: Readonly<Record<string, unknown>>): number {
  let tokens = 0;
  for (const message of chat.messages as Message[]) {
    tokens += 3 + (typeof message.content === 'string' ? message.content.length : 0);
  }
  return tokens;
}

const user = (content: string): Message => ({ role: 'user', content });
const assistant = (content: string): Message => ({ role: 'assistant', content });
const calls = (...ids: string[]): Message => ({
  role: 'assistant',
  content: null,
  tool_calls: ids.map((id) => ({ id, type: 'function', function: { name: 'f', arguments: '{}' } })),
});
const result = (id: string, content = 'ok'): Message => ({ role: 'tool', tool_call_id: id, content });

async function truncate(messages: Message[], budget: number, pinned = 0) {
  let counts = 0;
  const truncated = await truncateToWindow(
    { model: 'm', messages },
    {
      pinned,
      budget,
      count: (chat) => {
        counts++;
        return countOf(chat);
      },
    },
  );
  return { ...truncated, messages: truncated.chat.messages as Message[], counts };
}

describe('truncateToWindow', () => {
  it('leaves a request that fits as it is, counting it once', async () => {
    const messages = [user('aaaa'), assistant('bbbb'), user('cc')];
    const { chat, dropped, counts } = await truncate(messages, countOf({ messages }));
    expect(dropped).toBe(0);
    expect(chat.messages).toBe(messages);
    expect(counts).toBe(1);
  });

  it('drops the fewest oldest messages that make it fit, and keeps the instructions', async () => {
    const system = { role: 'system', content: 'be brief' };
    const messages = [system, user('x'.repeat(50)), assistant('y'.repeat(50)), user('z'.repeat(10))];
    // Fits once the first user message is gone (3+8 + 3+50 + 3+10 = 77), not before (130).
    const { messages: kept, dropped } = await truncate(messages, 80, 1);
    expect(kept).toEqual([system, assistant('y'.repeat(50)), user('z'.repeat(10))]);
    expect(dropped).toBe(1);
  });

  it('never starts at a tool result: a round of tool calls goes whole', async () => {
    const messages = [user('u'.repeat(40)), calls('a', 'b'), result('a'), result('b'), user('last')];
    // Dropping the first message is not enough (3+0 + 3+2 + 3+2 + 3+4 = 20 > 15); the next cut is before 'last'.
    const { messages: kept, dropped } = await truncate(messages, 15);
    expect(kept).toEqual([user('last')]);
    expect(dropped).toBe(4);
  });

  it('keeps the call a last tool result answers, even when that does not fit', async () => {
    const messages = [user('u'.repeat(40)), calls('a'), result('a', 'r'.repeat(30))];
    const { messages: kept } = await truncate(messages, 10);
    // The relay's context check refuses this; truncation does not make an invalid chat request.
    expect(kept).toEqual([calls('a'), result('a', 'r'.repeat(30))]);
  });

  it('drops a tool result whose call was dropped, wherever it stands', async () => {
    const messages = [calls('a'), user('u'.repeat(20)), result('a'), user('last')];
    const { messages: kept } = await truncate(messages, 30);
    expect(kept).toEqual([user('u'.repeat(20)), user('last')]);
  });

  it('goes as far as the last message when nothing shorter fits', async () => {
    const messages = [user('aaaa'), assistant('bbbb'), user('c'.repeat(100))];
    const { messages: kept, dropped } = await truncate(messages, 50);
    expect(kept).toEqual([user('c'.repeat(100))]);
    expect(dropped).toBe(2);
  });

  it('finds what cutting one message at a time finds, counting O(log n) times', async () => {
    let seed = 7;
    const random = () => {
      seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648;
      return seed / 2_147_483_648;
    };
    for (let round = 0; round < 200; round++) {
      const messages: Message[] = [];
      const length = 1 + Math.floor(random() * 40);
      for (let index = 0; index < length; index++) {
        const text = 'w'.repeat(Math.floor(random() * 30));
        const kind = random();
        if (kind < 0.2 && index > 0) {
          const id = `call${index}`;
          messages.push(calls(id), result(id, text));
        } else messages.push(kind < 0.6 ? user(text) : assistant(text));
      }
      const budget = Math.floor(random() * countOf({ messages }) * 1.2);
      const { messages: kept, counts, promptTokens } = await truncate(messages, budget);
      expect(promptTokens).toBe(countOf({ messages: kept }));
      // The reference: drop one leading message at a time (never leaving a tool result first) until it fits.
      let reference = messages;
      while (countOf({ messages: reference }) > budget && reference.length > 1) {
        let next = reference.slice(1);
        while (next.length > 1 && next[0]?.role === 'tool') next = next.slice(1);
        if (next[0]?.role === 'tool') break;
        reference = next;
      }
      expect(kept).toEqual(reference);
      expect(counts).toBeLessThanOrEqual(2 + Math.ceil(Math.log2(messages.length + 1)));
    }
  });
});
