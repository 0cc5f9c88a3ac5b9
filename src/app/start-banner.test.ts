import { describe, expect, it } from 'vitest';
import { formatStartBanner, type StartBannerInput } from './start-banner.js';

const input: StartBannerInput = {
  url: 'http://127.0.0.1:8080',
  adminToken: 'tga-token',
  demoKey: 'tg-demo',
  models: ['sim-pro-32k'],
  store: 'sqlite://data/tollgate.db',
  workers: 1,
  admissionStore: 'memory',
};

describe('formatStartBanner', () => {
  it('says where it listens, with what, and how to call it with the demo key', () => {
    const banner = formatStartBanner(input);
    expect(banner).toContain(
      'Tollgate is listening on http://127.0.0.1:8080  (1 worker, store sqlite://data/tollgate.db)',
    );
    expect(banner).toContain('Demo API key (shown once, keep it): tg-demo');
    expect(banner).toContain('"model":"sim-pro-32k"');
    expect(banner).not.toContain('Note:');
  });

  it('warns that several workers with in-memory admission each count limits on their own', () => {
    const banner = formatStartBanner({ ...input, workers: 3 });
    expect(banner).toContain('(3 workers,');
    expect(banner).toContain('up to 3 times a limit');
    expect(banner).toContain('admission.store: redis');
    expect(formatStartBanner({ ...input, workers: 3, admissionStore: 'redis' })).not.toContain('Note:');
  });

  it('warns that processes sharing a PostgreSQL store with in-memory admission each count limits on their own', () => {
    const postgres = { ...input, store: 'postgres://tollgate@db:5432/tollgate' };
    const banner = formatStartBanner(postgres);
    expect(banner).toContain('each process on this store counts rate limits');
    expect(banner).toContain('admission.store: redis');
    expect(formatStartBanner({ ...postgres, admissionStore: 'redis' })).not.toContain('Note:');
  });
});
