import { createStore } from './create-store.js';

// Child process of sqlite-store.test.ts: `node sqlite-migrate.child.js <store url>` migrates and reports.
const url = process.argv[2];
if (url === undefined) throw new Error('usage: sqlite-migrate.child.js <store url>');
const store = await createStore(url);
try {
  await store.migrate();
  await store.putSettingIfAbsent(`migrated-by-${process.pid}`, 'yes');
  process.stdout.write('migrated\n');
} finally {
  await store.close();
}
