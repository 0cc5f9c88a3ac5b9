import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { sqliteResponseStoreForFile } from '../../test/support/sqlite-response-store.js';
import { InvalidRequestError, NotFoundError } from '../errors/gateway-error.js';
import type { ResponseStore } from './response-store.js';
import { MAX_CONVERSATION_RESPONSES, StoredResponses } from './stored-responses.js';

const DAY_MS = 86_400_000;
const fixture = sqliteResponseStoreForFile('tollgate-stored-responses-');
let now = Date.parse('2026-12-01T00:00:00Z');
const logger = pino({ level: 'silent' });
const alice = { tenantId: 'ten_alice', keyId: 'key_alice' };

function service(options: { enabled?: boolean } = {}): StoredResponses {
  return new StoredResponses(fixture.current(), {
    enabled: options.enabled ?? true,
    retentionMs: 30 * DAY_MS,
    logger,
    now: () => now,
  });
}

let counter = 0;
/** Stores a response whose input and output are one item each, named after `label`; returns its id. */
async function respond(responses: StoredResponses, label: string, previous: string | null = null): Promise<string> {
  const id = `resp_${label}_${++counter}`;
  await responses.save(alice, [{ id: `msg_in_${label}`, type: 'message', role: 'user', content: label }], {
    id,
    object: 'response',
    previous_response_id: previous,
    output: [{ id: `msg_out_${label}`, type: 'message', role: 'assistant', content: [] }],
  });
  return id;
}

const itemIds = (items: Record<string, unknown>[]) => items.map((item) => item.id);

describe('StoredResponses', () => {
  it('stores unless the request or the operator says not to', () => {
    const on = service();
    expect([
      on.stores({}),
      on.stores({ store: null }),
      on.stores({ store: true }),
      on.stores({ store: false }),
    ]).toEqual([true, true, true, false]);
    expect(service({ enabled: false }).stores({ store: true })).toBe(false);
  });

  it('reads a conversation back to its first response, inputs before outputs, oldest first', async () => {
    const responses = service();
    const first = await respond(responses, 'a');
    const second = await respond(responses, 'b', first);
    const third = await respond(responses, 'c', second);
    expect(itemIds(await responses.historyOf(alice.tenantId, third))).toEqual([
      'msg_in_a',
      'msg_out_a',
      'msg_in_b',
      'msg_out_b',
      'msg_in_c',
      'msg_out_c',
    ]);
    expect(itemIds(await responses.historyOf(alice.tenantId, first))).toEqual(['msg_in_a', 'msg_out_a']);
  });

  it('refuses a conversation it cannot read whole, naming the response that is gone', async () => {
    const responses = service();
    const first = await respond(responses, 'd');
    const second = await respond(responses, 'e', first);
    const otherTenant = responses.historyOf('ten_bob', second);
    await expect(otherTenant).rejects.toBeInstanceOf(InvalidRequestError);
    await expect(otherTenant).rejects.toMatchObject({
      code: 'previous_response_not_found',
      param: 'previous_response_id',
    });
    await responses.delete(alice.tenantId, first);
    const broken = responses.historyOf(alice.tenantId, second);
    await expect(broken).rejects.toMatchObject({ code: 'previous_response_not_found' });
    await expect(broken).rejects.toThrow(first);
  });

  it('refuses a conversation longer than it reads', async () => {
    const responses = service();
    let previous: string | null = null;
    let longest = '';
    for (let index = 0; index <= MAX_CONVERSATION_RESPONSES; index++) {
      longest = previous ?? '';
      previous = await respond(responses, `long${index}`, previous);
    }
    // As long as it reads is read whole.
    expect(await responses.historyOf(alice.tenantId, longest)).toHaveLength(2 * MAX_CONVERSATION_RESPONSES);
    await expect(responses.historyOf(alice.tenantId, previous!)).rejects.toMatchObject({
      code: 'invalid_value',
      param: 'previous_response_id',
    });
  });

  it('refuses to go on from a conversation one of whose responses still runs in the background', async () => {
    const responses = service();
    const running = `resp_running_${++counter}`;
    await responses.save(alice, [], { id: running, object: 'response', status: 'in_progress', output: [] });
    const next = await respond(responses, 'after-running', running);
    const last = await respond(responses, 'last', next);
    const refused = responses.historyOf(alice.tenantId, last);
    await expect(refused).rejects.toMatchObject({ code: 'previous_response_not_done', param: 'previous_response_id' });
    await expect(refused).rejects.toThrow(running);
  });

  it('refuses previous_response_id when storing is off', async () => {
    const id = await respond(service(), 'f');
    await expect(service({ enabled: false }).historyOf(alice.tenantId, id)).rejects.toMatchObject({
      code: 'unsupported_parameter',
      param: 'previous_response_id',
    });
  });

  it('pages input items newest first by default, or oldest first, after an item', async () => {
    const responses = service();
    const items = ['i1', 'i2', 'i3', 'i4', 'i5'].map((id) => ({ id, type: 'message', role: 'user', content: [] }));
    await responses.save(alice, items, { id: 'resp_paged', object: 'response', output: [] });
    const page = (query: { limit: number; order: 'asc' | 'desc'; after?: string }) =>
      responses.inputItems(alice.tenantId, 'resp_paged', query);

    const newest = await page({ limit: 2, order: 'desc' });
    expect([itemIds(newest.data), newest.first_id, newest.last_id, newest.has_more]).toEqual([
      ['i5', 'i4'],
      'i5',
      'i4',
      true,
    ]);
    const next = await page({ limit: 2, order: 'desc', after: 'i4' });
    expect([itemIds(next.data), next.has_more]).toEqual([['i3', 'i2'], true]);
    const last = await page({ limit: 2, order: 'desc', after: 'i2' });
    expect([itemIds(last.data), last.has_more]).toEqual([['i1'], false]);
    const oldest = await page({ limit: 10, order: 'asc', after: 'i3' });
    expect([itemIds(oldest.data), oldest.has_more]).toEqual([['i4', 'i5'], false]);
    const empty = await page({ limit: 10, order: 'asc', after: 'i5' });
    expect(empty).toEqual({ object: 'list', data: [], first_id: null, last_id: null, has_more: false });
    await expect(page({ limit: 2, order: 'asc', after: 'i9' })).rejects.toMatchObject({ param: 'after' });
    await expect(responses.inputItems('ten_bob', 'resp_paged', { limit: 2, order: 'asc' })).rejects.toBeInstanceOf(
      NotFoundError,
    );
  });

  it('sweeps responses past their retention, and keeps the others', async () => {
    const responses = service();
    const old = await respond(responses, 'old');
    now += 20 * DAY_MS;
    const young = await respond(responses, 'young');
    now += 11 * DAY_MS;
    await expect(responses.get(alice.tenantId, old)).rejects.toBeInstanceOf(NotFoundError);
    await responses.sweep();
    expect(await fixture.current().deleteExpiredResponses(now, 10)).toBe(0);
    expect((await responses.get(alice.tenantId, young)).id).toBe(young);
  });

  it('logs a response it could not store, and does not throw', async () => {
    const lines: string[] = [];
    let failures = 0;
    // The real store's methods (on its prototype), but for saving.
    const failing: ResponseStore = Object.assign(Object.create(fixture.current()), {
      saveResponse: async () => {
        throw new Error('disk full');
      },
    });
    const responses = new StoredResponses(failing, {
      enabled: true,
      retentionMs: DAY_MS,
      logger: pino({ level: 'error' }, { write: (line: string) => lines.push(line) }),
      onSaveFailure: () => failures++,
    });
    await responses.save(alice, [], { id: 'resp_lost', object: 'response', output: [] });
    expect(lines).toHaveLength(1);
    expect(failures).toBe(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ msg: 'response not stored', responseId: 'resp_lost' });
  });
});
