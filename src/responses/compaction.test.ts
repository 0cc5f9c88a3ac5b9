import { describe, expect, it } from 'vitest';
import { chatRequestOf, type ResponsesRequest } from '../api/responses/responses-request.js';
import { InvalidRequestError } from '../errors/gateway-error.js';
import { CompactionSeal, keptItems, summaryOf, summaryTokenLimit } from './compaction.js';

const SECRET = 'tgcs_first-secret-of-this-gateway-0123456789';
const seal = new CompactionSeal([SECRET]);

describe('CompactionSeal', () => {
  it('opens what it sealed for the same tenant, and hides the summary from whoever carries it', () => {
    const summary = 'The user plans three days in Oslo; skiing on day three. Ünïcode kept.';
    const sealed = seal.seal('ten_a', summary);
    expect(sealed).toMatch(/^tgc1\.[A-Za-z0-9_-]{8}\.[A-Za-z0-9_-]+$/);
    expect(sealed).not.toContain('Oslo');
    expect(Buffer.from(sealed.split('.')[2]!, 'base64url').toString('latin1')).not.toContain('Oslo');
    expect(seal.open('ten_a', sealed, 'input[0].encrypted_content')).toBe(summary);
    // Sealed twice, two different texts: a fresh IV each time.
    expect(seal.seal('ten_a', summary)).not.toBe(sealed);
  });

  it("refuses another tenant's, another gateway's, a changed one and one that is not sealed, naming the field", () => {
    const sealed = seal.seal('ten_a', 'summary');
    const middle = sealed.length - 20;
    const changed = sealed.slice(0, middle) + (sealed[middle] === 'A' ? 'B' : 'A') + sealed.slice(middle + 1);
    const attempts = [
      () => seal.open('ten_b', sealed, 'input[2].encrypted_content'),
      () =>
        new CompactionSeal(['tgcs_another-gateway-secret-0123456789']).open(
          'ten_a',
          sealed,
          'input[2].encrypted_content',
        ),
      () => seal.open('ten_a', changed, 'input[2].encrypted_content'),
      () => seal.open('ten_a', 'gAAAAABoplaintext', 'input[2].encrypted_content'),
      () => seal.open('ten_a', 'tgc1.', 'input[2].encrypted_content'),
    ];
    for (const attempt of attempts) {
      expect(attempt).toThrow(InvalidRequestError);
      expect(attempt).toThrow(
        expect.objectContaining({ code: 'invalid_encrypted_content', param: 'input[2].encrypted_content' }),
      );
    }
  });
});

describe('CompactionSeal with several secrets', () => {
  it('seals with the first secret and opens with every one, and counts what it refuses and why', () => {
    const next = 'tgcs_the-secret-that-replaces-the-first-0123';
    const refused: string[] = [];
    const rotated = new CompactionSeal([next, SECRET], (reason) => refused.push(reason));
    const old = seal.seal('ten_a', 'made before the new secret');
    expect(rotated.open('ten_a', old, 'p')).toBe('made before the new secret');
    const fresh = rotated.seal('ten_a', 'made after');
    // The old gateway cannot open what the new key sealed; the new one's key id is not the old one's.
    expect(fresh.split('.')[1]).not.toBe(old.split('.')[1]);
    expect(() => seal.open('ten_a', fresh, 'p')).toThrow(InvalidRequestError);
    // Once the old secret is dropped, what it sealed is refused as sealed with an unknown key.
    const dropped = new CompactionSeal([next], (reason) => refused.push(reason));
    expect(() => dropped.open('ten_a', old, 'p')).toThrow(InvalidRequestError);
    expect(() => rotated.open('ten_b', old, 'p')).toThrow(InvalidRequestError);
    expect(refused).toEqual(['unknown_key', 'unverified']);
    expect(() => new CompactionSeal([])).toThrow();
    expect(() => new CompactionSeal([''])).toThrow();
  });
});

describe('summaryOf', () => {
  const completion = (content: unknown, finishReason = 'stop') => ({
    choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: finishReason }],
  });

  it('takes the text of a finished or a cut answer, and refuses an answer with no summary in it', () => {
    expect(summaryOf(completion('The summary.'))).toBe('The summary.');
    expect(summaryOf(completion('A summary cut', 'length'))).toBe('A summary cut');
    for (const empty of [completion(null), completion('  \n'), completion('Partial', 'content_filter'), {}]) {
      expect(() => summaryOf(empty)).toThrow(expect.objectContaining({ status: 502, code: 'compaction_failed' }));
    }
  });
});

describe('summaryTokenLimit', () => {
  it('lets a summary be as long as its conversation, from 256 to 4,096 tokens, within what the window leaves', () => {
    expect(summaryTokenLimit(100, 32_768)).toBe(256);
    expect(summaryTokenLimit(1_000, 32_768)).toBe(1_000);
    expect(summaryTokenLimit(20_000, 32_768)).toBe(4_096);
    expect(summaryTokenLimit(32_000, 32_768)).toBe(768);
    expect(summaryTokenLimit(32_512, 32_768)).toBe(256);
    expect(() => summaryTokenLimit(32_513, 32_768)).toThrow(
      expect.objectContaining({ code: 'context_length_exceeded', param: 'input' }),
    );
  });
});

describe('keptItems', () => {
  it("keeps the client's own messages in order, and leaves what the model made and the tools' outputs", () => {
    const items = [
      { id: 'msg_1', type: 'message', role: 'developer', content: [] },
      { id: 'msg_2', type: 'message', role: 'user', content: [] },
      { id: 'msg_3', type: 'message', role: 'assistant', content: [] },
      { id: 'rs_1', type: 'reasoning', summary: [] },
      { id: 'fc_1', type: 'function_call', call_id: 'c', name: 'f', arguments: '{}' },
      { id: 'fco_1', type: 'function_call_output', call_id: 'c', output: 'x' },
      { id: 'cmp_1', type: 'compaction', encrypted_content: 'tgc1.x' },
      { id: 'msg_4', type: 'message', role: 'system', content: [] },
      { id: 'msg_5', type: 'message', role: 'user', content: [] },
    ];
    expect(keptItems(items).map((item) => item.id)).toEqual(['msg_1', 'msg_2', 'msg_4', 'msg_5']);
  });
});

describe('chatRequestOf with compaction items', () => {
  const request = (input: Record<string, unknown>[]) => ({ model: 'm', input }) as ResponsesRequest;

  it('reads a compaction item as the assistant message of its summary, in its place', () => {
    const sealed = seal.seal('ten_a', 'Summary so far.');
    const chat = chatRequestOf(
      request([
        { role: 'user', content: 'Plan a trip.' },
        { type: 'compaction', id: 'cmp_1', encrypted_content: sealed },
        { role: 'user', content: 'Go on.' },
      ]),
      undefined,
      { openCompaction: (text, param) => seal.open('ten_a', text, param) },
    );
    expect(chat.messages).toEqual([
      { role: 'user', content: 'Plan a trip.' },
      { role: 'assistant', content: 'Summary so far.' },
      { role: 'user', content: 'Go on.' },
    ]);
  });

  it('refuses a compaction item it has no way to open, or that has no content, naming it', () => {
    const item = { type: 'compaction', encrypted_content: seal.seal('ten_a', 'x') };
    expect(() => chatRequestOf(request([item]))).toThrow(
      expect.objectContaining({ code: 'unsupported_parameter', param: 'input[0].type' }),
    );
    expect(() =>
      chatRequestOf(request([{ type: 'compaction' }]), undefined, { openCompaction: () => 'never' }),
    ).toThrow(expect.objectContaining({ code: 'missing_required_parameter', param: 'input[0].encrypted_content' }));
  });
});
