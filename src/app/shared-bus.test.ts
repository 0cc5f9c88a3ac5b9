import pg from 'pg';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { dropSchema, schemaUrl, testDatabaseUrl, uniqueSchema } from '../../test/support/postgres-schema.js';
import { createStore } from '../store/create-store.js';
import { RedisInvalidationBus } from '../tenancy/redis-invalidation-bus.js';
import { openSharedBus } from './shared-bus.js';

const logger = pino({ level: 'silent' });
const memory = { admission: { store: 'memory' } } as never;

describe('openSharedBus', () => {
  it('gives the processes of a PostgreSQL store without Redis one LISTEN connection each, for every purpose', async () => {
    const schema = uniqueSchema('shared_bus');
    const store = await createStore(schemaUrl(schema));
    const admin = new pg.Client({ connectionString: testDatabaseUrl });
    await admin.connect();
    try {
      const changes = openSharedBus(memory, store, 'invalidations', { logger })!;
      const leases = openSharedBus(memory, store, 'lease-returns', { logger })!;
      await Promise.all([changes.ready(), leases.ready()]);
      // A connection's last statement is its last LISTEN: two connections would show one row per channel.
      const listening = await admin.query('select query from pg_stat_activity where query like $1', [
        `LISTEN "tollgate:${schema}:%`,
      ]);
      expect(listening.rows).toEqual([{ query: `LISTEN "tollgate:${schema}:lease-returns"` }]);
      await changes.close();
      await leases.close();
    } finally {
      await admin.end();
      await store.close();
      await dropSchema(schema);
    }
  });

  it('uses Redis pub/sub when admission shares Redis, and nothing on an embedded store without it', async () => {
    const store = await createStore('sqlite://:memory:');
    try {
      expect(openSharedBus(memory, store, 'invalidations', { logger })).toBeUndefined();
      const redis = openSharedBus(
        { admission: { store: 'redis', redis_url: 'redis://127.0.0.1:6379' } } as never,
        store,
        'invalidations',
        { logger },
      );
      expect(redis).toBeInstanceOf(RedisInvalidationBus);
      await redis?.close();
    } finally {
      await store.close();
    }
  });
});
