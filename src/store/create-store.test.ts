import { describe, expect, it } from 'vitest';
import { createStore } from './create-store.js';

describe('createStore', () => {
  it('refuses unknown schemes without echoing a password', async () => {
    const error = await createStore('mysql://admin:hunter2@db/x').then(
      () => undefined,
      (caught: unknown) => caught as Error,
    );
    expect(error?.message).toMatch(/Unsupported store URL/);
    expect(error?.message).not.toContain('hunter2');
  });

  it('refuses an empty SQLite path and a bad pool size', async () => {
    await expect(createStore('sqlite://')).rejects.toThrow(/file path/);
    await expect(createStore('postgres://postgres@127.0.0.1:5432/test?pool_size=0')).rejects.toThrow(/pool_size/);
    await expect(createStore('postgres://postgres@127.0.0.1:5432/test?pool_size=x')).rejects.toThrow(/pool_size/);
  });

  it('opens sqlite://:memory:', async () => {
    const store = await createStore('sqlite://:memory:');
    expect(store.kind).toBe('sqlite');
    await store.migrate();
    expect(await store.listTenants()).toEqual([]);
    await store.close();
    await store.close();
  });
});
