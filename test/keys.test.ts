/** API key lifecycle through the admin API and the official SDK: create, use, revoke, expiry, isolation. */
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashApiKey } from '../src/tenancy/api-key.js';
import { startTestGateway, type TestGateway } from './support/test-gateway.js';

let harness: TestGateway;
beforeAll(async () => {
  harness = await startTestGateway();
});
afterAll(async () => harness?.close());

const ask = (client: OpenAI) =>
  client.chat.completions.create({ model: 'sim-pro-32k', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 });

describe('key lifecycle', () => {
  it('creates a key shown once and stored only as a hash', async () => {
    const tenant = await harness.admin('POST', '/tenants', { name: 'acme' });
    expect(tenant.status).toBe(201);
    expect(tenant.body).toMatchObject({ name: 'acme' });
    expect(tenant.body.id).toMatch(/^ten_/);
    const created = await harness.admin('POST', `/tenants/${tenant.body.id}/keys`, { name: 'ci' });
    expect(created.status).toBe(201);
    expect(created.body.key).toMatch(/^tg-[A-Za-z0-9_-]{43,}$/);
    expect(created.body.prefix).toBe(created.body.key.slice(0, created.body.prefix.length));
    const listed = await harness.admin('GET', `/tenants/${tenant.body.id}/keys`);
    expect(JSON.stringify(listed.body)).not.toContain(created.body.key);
    const stored = await harness.gateway.store.getKey(created.body.id);
    expect(stored?.hash).toBe(hashApiKey(created.body.key));
    expect(JSON.stringify(stored)).not.toContain(created.body.key);
  });

  it('a revoked key stops working at once', async () => {
    const { key, keyId } = await harness.createTenantWithKey();
    const client = harness.client(key);
    expect((await ask(client)).choices).toHaveLength(1);
    const revoked = await harness.admin('DELETE', `/keys/${keyId}`);
    expect(revoked.status).toBe(200);
    expect(revoked.body.revoked_at).not.toBeNull();
    const error = await ask(client).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(OpenAI.AuthenticationError);
  });

  it('an expired key is refused', async () => {
    // expires_at is in whole seconds: two full seconds ahead, so a slow machine still creates the key and uses it
    // once before it expires (one second ahead was sometimes only a millisecond ahead).
    const soon = Math.ceil(Date.now() / 1000) + 2;
    const { key } = await harness.createTenantWithKey({ expires_at: soon });
    const client = harness.client(key);
    expect((await ask(client)).choices).toHaveLength(1);
    await new Promise((resolve) => setTimeout(resolve, soon * 1000 - Date.now() + 50));
    const error = await ask(client).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(OpenAI.AuthenticationError);
    expect((error as InstanceType<typeof OpenAI.AuthenticationError>).code).toBe('expired_api_key');
  });

  it('rejects a key that expires in the past and unknown tenants', async () => {
    const tenant = await harness.admin('POST', '/tenants', { name: 'past' });
    const past = await harness.admin('POST', `/tenants/${tenant.body.id}/keys`, { expires_at: '2020-01-01T00:00:00Z' });
    expect(past.status).toBe(400);
    const unknown = await harness.admin('POST', '/tenants/ten_doesnotexist/keys', {});
    expect(unknown.status).toBe(404);
    const revokeUnknown = await harness.admin('DELETE', '/keys/key_doesnotexist');
    expect(revokeUnknown.status).toBe(404);
    const bad = await harness.admin('POST', '/tenants', { name: '' });
    expect(bad.status).toBe(400);
  });

  it("lists only a tenant's own keys", async () => {
    const a = await harness.createTenantWithKey();
    const b = await harness.createTenantWithKey();
    const listA = await harness.admin('GET', `/tenants/${a.tenantId}/keys`);
    expect(listA.body.data.map((key: { id: string }) => key.id)).toEqual([a.keyId]);
    const listB = await harness.admin('GET', `/tenants/${b.tenantId}/keys`);
    expect(listB.body.data.map((key: { id: string }) => key.id)).toEqual([b.keyId]);
  });
});
