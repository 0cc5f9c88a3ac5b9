import pg from 'pg';
import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ConfigSubject } from './invalidation-bus.js';
import { describeInvalidationBusConformance } from './invalidation-bus-conformance.js';
import { type PostgresInvalidationBus, PostgresListener, postgresChannel } from './postgres-invalidation-bus.js';

const databaseUrl = 'postgres://postgres@127.0.0.1:5432/test';
const logger = pino({ level: 'silent' });
const eventually = { timeout: 10_000, interval: 20 };

const listeners: PostgresListener[] = [];
afterEach(async () => {
  await Promise.all(listeners.splice(0).map((listener) => listener.close()));
});

function openListener(options: { connectionString?: string; onFailure?: () => void; applicationName?: string } = {}) {
  const listener = new PostgresListener({
    connectionString: options.connectionString ?? databaseUrl,
    logger,
    reconnectDelayMs: 20,
    maxReconnectDelayMs: 200,
    ...(options.onFailure === undefined ? {} : { onFailure: options.onFailure }),
    ...(options.applicationName === undefined ? {} : { applicationName: options.applicationName }),
  });
  listeners.push(listener);
  return listener;
}

function subscribed(bus: PostgresInvalidationBus) {
  const seen: string[] = [];
  bus.subscribe((subject) => seen.push(subject));
  return { bus, seen };
}

function channelFor(label: string): string {
  return postgresChannel(`tg_bus_${process.pid}_${Date.now().toString(36)}`, label);
}

/** A process's bus on `channel`: a listener of its own. */
function openBus(channel: string, options: { connectionString?: string; onFailure?: () => void } = {}) {
  return subscribed(openListener(options).bus(channel));
}

/** Ends the server sessions listening on `channel` (a PostgreSQL restart or failover, as one process sees it). */
async function terminateListeners(channel: string): Promise<number> {
  const admin = new pg.Client({ connectionString: databaseUrl });
  await admin.connect();
  try {
    // A listening session's last statement is its LISTEN.
    const result = await admin.query(
      'select pg_terminate_backend(pid) from pg_stat_activity where query = $1 and pid <> pg_backend_pid()',
      [`LISTEN "${channel}"`],
    );
    return result.rowCount ?? 0;
  } finally {
    await admin.end();
  }
}

describe('PostgresInvalidationBus', () => {
  it("delivers what one process publishes to every other, and to the publisher's own subscribers once", async () => {
    const channel = channelFor('invalidations');
    const first = openBus(channel);
    const second = openBus(channel);
    const third = openBus(channel);
    await Promise.all([first.bus.ready(), second.bus.ready(), third.bus.ready()]);
    await first.bus.publish('key_abc');
    // The publisher's subscribers run before `publish` resolves: its own next request is refused at once.
    expect(first.seen).toEqual(['key_abc']);
    await vi.waitFor(() => {
      expect(second.seen).toEqual(['key_abc']);
      expect(third.seen).toEqual(['key_abc']);
    }, eventually);
    await second.bus.publish(ConfigSubject.prices);
    await vi.waitFor(() => expect(third.seen).toEqual(['key_abc', ConfigSubject.prices]), eventually);
    await vi.waitFor(() => expect(first.seen).toEqual(['key_abc', ConfigSubject.prices]), eventually);
    // The notification of its own message came back to the publisher too, and was not delivered a second time.
    expect(first.seen).toEqual(['key_abc', ConfigSubject.prices]);
    expect(second.seen).toEqual(['key_abc', ConfigSubject.prices]);
  });

  it('keeps stores in other schemas of one database apart', async () => {
    const schema = `tg_bus_${process.pid}_${Date.now().toString(36)}`;
    const ours = openBus(postgresChannel(schema, 'invalidations'));
    const theirs = openBus(postgresChannel(`${schema}_other`, 'invalidations'));
    const ourLeases = openBus(postgresChannel(schema, 'lease-returns'));
    const peer = openBus(postgresChannel(schema, 'invalidations'));
    await Promise.all([ours.bus.ready(), theirs.bus.ready(), ourLeases.bus.ready(), peer.bus.ready()]);
    await ours.bus.publish('key_1');
    await vi.waitFor(() => expect(peer.seen).toEqual(['key_1']), eventually);
    // What reached a listener of the same schema after it would have reached these by now.
    await theirs.bus.publish('key_2');
    await vi.waitFor(() => expect(ours.seen).toEqual(['key_1']), eventually);
    expect(theirs.seen).toEqual(['key_2']);
    expect(ourLeases.seen).toEqual([]);
    expect(peer.seen).toEqual(['key_1']);
  });

  it("carries every channel of a process on one connection, which ends with the process's last bus", async () => {
    const schema = `tg_bus_${process.pid}_${Date.now().toString(36)}`;
    const name = `tgtest-${process.pid}-${Date.now().toString(36)}`;
    const listener = openListener({ applicationName: name });
    const changes = subscribed(listener.bus(postgresChannel(schema, 'invalidations')));
    const leases = subscribed(listener.bus(postgresChannel(schema, 'lease-returns')));
    await listener.ready();
    const other = openBus(postgresChannel(schema, 'invalidations'));
    const otherLeases = openBus(postgresChannel(schema, 'lease-returns'));
    await Promise.all([other.bus.ready(), otherLeases.bus.ready()]);
    const admin = new pg.Client({ connectionString: databaseUrl });
    await admin.connect();
    const connections = async () =>
      Number(
        (await admin.query('select count(*) as n from pg_stat_activity where application_name = $1', [name])).rows[0].n,
      );
    try {
      expect(await connections()).toBe(1);
      await other.bus.publish('key_1');
      await otherLeases.bus.publish('tollgate:lease-return:ask:r1:owner');
      await vi.waitFor(() => {
        expect(changes.seen).toEqual(['key_1']);
        expect(leases.seen).toEqual(['tollgate:lease-return:ask:r1:owner']);
      }, eventually);
      // One bus closed: the other still hears its channel, on the same connection.
      await leases.bus.close();
      await otherLeases.bus.publish('tollgate:lease-return:ask:r2:owner');
      await other.bus.publish('key_2');
      await vi.waitFor(() => expect(changes.seen).toEqual(['key_1', 'key_2']), eventually);
      expect(leases.seen).toEqual(['tollgate:lease-return:ask:r1:owner']);
      expect(await connections()).toBe(1);
      // A second bus on a channel (two gateways on one store object): closing one, twice, leaves the other hearing.
      const again = subscribed(listener.bus(postgresChannel(schema, 'invalidations')));
      await again.bus.close();
      await again.bus.close();
      await other.bus.publish('key_3');
      await vi.waitFor(() => expect(changes.seen).toEqual(['key_1', 'key_2', 'key_3']), eventually);
      await changes.bus.close();
      await vi.waitFor(async () => expect(await connections()).toBe(0), eventually);
      expect(listener.isClosed).toBe(true);
    } finally {
      await admin.end();
    }
  });

  it('names every channel within PostgreSQL identifier length, a distinct one for every schema', () => {
    const long = 'a'.repeat(63);
    const channels = [
      postgresChannel(long, 'lease-returns'),
      postgresChannel(`${'a'.repeat(62)}b`, 'lease-returns'),
      postgresChannel(long, 'invalidations'),
      postgresChannel('public', 'invalidations'),
    ];
    for (const channel of channels) expect(Buffer.byteLength(channel)).toBeLessThanOrEqual(63);
    expect(new Set(channels).size).toBe(channels.length);
    expect(channels[3]).toBe('tollgate:public:invalidations');
  });

  it('after losing its connection listens again, and has everyone drop what they cached meanwhile', async () => {
    const channel = channelFor('invalidations');
    let failures = 0;
    const dropped = openBus(channel, {
      onFailure: () => {
        failures += 1;
      },
    });
    const other = openBus(channel);
    await Promise.all([dropped.bus.ready(), other.bus.ready()]);
    expect(await terminateListeners(channel)).toBeGreaterThanOrEqual(2);
    // Both sessions were ended; both come back, and each announces everything as changed to itself and the other.
    await vi.waitFor(() => {
      expect(dropped.seen.filter((subject) => subject === ConfigSubject.all).length).toBeGreaterThanOrEqual(1);
      expect(other.seen.filter((subject) => subject === ConfigSubject.all).length).toBeGreaterThanOrEqual(1);
    }, eventually);
    expect(failures).toBeGreaterThanOrEqual(1);
    await Promise.all([dropped.bus.ready(), other.bus.ready()]);
    await other.bus.publish('key_after');
    await vi.waitFor(() => expect(dropped.seen).toContain('key_after'), eventually);
  });
});

describeInvalidationBusConformance('PostgreSQL LISTEN/NOTIFY', {
  open: (channel) => openListener().bus(channel),
  openUnreachable: (channel, onFailure) =>
    // Port 9 (discard) on loopback: nothing listens there on these machines.
    openListener({ connectionString: 'postgres://postgres@127.0.0.1:9/test', onFailure }).bus(channel),
});
