import { describe, expect, it } from 'vitest';
import { chatRequestOf, type ResponsesRequest } from '../api/responses/responses-request.js';
import { InvalidRequestError } from '../errors/gateway-error.js';
import { CompactionSeal, keptItems } from './compaction.js';

const seal = new CompactionSeal('tgcs_secret-one');

describe('CompactionSeal', () => {
  it('opens what it sealed for the same tenant, and hides the summary from whoever carries it', () => {
    const summary = 'The user plans three days in Oslo; skiing on day three. Ünïcode kept.';
    const sealed = seal.seal('ten_a', summary);
    expect(sealed.startsWith('tgc1.')).toBe(true);
    expect(sealed).not.toContain('Oslo');
    expect(Buffer.from(sealed.slice(5), 'base64url').toString('latin1')).not.toContain('Oslo');
    expect(seal.open('ten_a', sealed, 'input[0].encrypted_content')).toBe(summary);
    // Sealed twice, two different texts: a fresh IV each time.
    expect(seal.seal('ten_a', summary)).not.toBe(sealed);
  });

  it("refuses another tenant's, another gateway's, a changed one and one that is not sealed, naming the field", () => {
    const sealed = seal.seal('ten_a', 'summary');
    const middle = 5 + Math.floor((sealed.length - 5) / 2);
    const changed = sealed.slice(0, middle) + (sealed[middle] === 'A' ? 'B' : 'A') + sealed.slice(middle + 1);
    const attempts = [
      () => seal.open('ten_b', sealed, 'input[2].encrypted_content'),
      () => new CompactionSeal('tgcs_secret-two').open('ten_a', sealed, 'input[2].encrypted_content'),
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
