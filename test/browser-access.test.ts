/**
 * What a web page's script and an odd HTTP client meet at the edge: CORS (off by default, exact origins or `*` when
 * configured, on whole, streamed and error responses alike) and request bodies the gateway cannot read (a JSON text
 * sent as `text/plain`, a gzip-compressed body), each refused with a status and code that say why.
 */
import { gzipSync } from 'node:zlib';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfigDocument } from '../src/config/load-config.js';
import { fastSimulatedConfig, startTestGateway, type TestGateway } from './support/test-gateway.js';

const PAGE = 'https://playground.example.com';
const OTHER_PAGE = 'https://evil.example.net';
const CHAT = { model: 'sim-pro-32k', messages: [{ role: 'user', content: 'hi' }], max_tokens: 3 };

/** A header's comma-separated list. */
const listed = (value: string | string[] | undefined) => String(value).split(/\s*,\s*/);

async function preflight(harness: TestGateway, origin: string, route = '/v1/chat/completions') {
  const response = await request(`${harness.url}${route}`, {
    method: 'OPTIONS',
    headers: {
      origin,
      'access-control-request-method': 'POST',
      'access-control-request-headers': 'authorization,content-type,x-stainless-os',
    },
  });
  await response.body.dump();
  return response;
}

async function chat(harness: TestGateway, key: string, body: object, origin?: string) {
  const response = await request(`${harness.url}/v1/chat/completions`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${key}`,
      'content-type': 'application/json',
      ...(origin === undefined ? {} : { origin }),
    },
    body: JSON.stringify(body),
  });
  return { status: response.statusCode, headers: response.headers, text: await response.body.text() };
}

/** A gateway started for the enclosing `describe`, with one tenant's key. */
function gatewayFor(document?: Record<string, unknown>): { harness: TestGateway; key: string } {
  const state = {} as { harness: TestGateway; key: string };
  beforeAll(async () => {
    state.harness = await startTestGateway(document);
    state.key = (await state.harness.createTenantWithKey()).key;
  });
  afterAll(async () => state.harness?.close());
  return state;
}

describe('CORS off (the default)', () => {
  const gateway = gatewayFor();

  it('grants no page anything, and a preflight is a 404 rather than a refused key', async () => {
    const answer = await preflight(gateway.harness, PAGE);
    expect(answer.statusCode).toBe(404);
    expect(answer.headers['access-control-allow-origin']).toBeUndefined();
    const reply = await chat(gateway.harness, gateway.key, CHAT, PAGE);
    expect(reply.status).toBe(200);
    expect(reply.headers['access-control-allow-origin']).toBeUndefined();
  });
});

describe('CORS for listed origins', () => {
  const gateway = gatewayFor({
    ...fastSimulatedConfig,
    server: { cors: { origins: [PAGE, 'http://localhost:5173'], max_age_s: 120 } },
  });

  it('answers a listed origin preflight without a key, allowing the headers the SDK sends', async () => {
    const answer = await preflight(gateway.harness, PAGE);
    expect(answer.statusCode).toBe(204);
    expect(answer.headers['access-control-allow-origin']).toBe(PAGE);
    expect(listed(answer.headers['access-control-allow-methods'])).toContain('POST');
    expect(answer.headers['access-control-allow-headers']).toBe('authorization,content-type,x-stainless-os');
    expect(answer.headers['access-control-max-age']).toBe('120');
    expect(answer.headers['access-control-allow-credentials']).toBeUndefined();
  });

  it('grants an unlisted origin nothing', async () => {
    const answer = await preflight(gateway.harness, OTHER_PAGE);
    expect(answer.headers['access-control-allow-origin']).toBeUndefined();
    const reply = await chat(gateway.harness, gateway.key, CHAT, OTHER_PAGE);
    expect(reply.status).toBe(200);
    expect(reply.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('lets the page read whole answers, streams and errors, with the request id and rate-limit headers', async () => {
    const whole = await chat(gateway.harness, gateway.key, CHAT, PAGE);
    expect(whole.status).toBe(200);
    expect(whole.headers['access-control-allow-origin']).toBe(PAGE);
    const exposed = listed(whole.headers['access-control-expose-headers']);
    expect(exposed).toEqual(expect.arrayContaining(['x-request-id', 'retry-after', 'x-ratelimit-remaining-tokens']));

    const stream = await chat(gateway.harness, gateway.key, { ...CHAT, stream: true }, PAGE);
    expect(stream.status).toBe(200);
    expect(stream.headers['content-type']).toMatch(/^text\/event-stream/);
    expect(stream.text.trimEnd().endsWith('data: [DONE]')).toBe(true);
    expect(stream.headers['access-control-allow-origin']).toBe(PAGE);
    expect(stream.headers['access-control-expose-headers']).toBe(whole.headers['access-control-expose-headers']);
    expect(stream.headers['x-request-id']).toMatch(/^req_/);

    // Refused before the stream opened: the page must still be able to read why.
    const refusedStream = await chat(gateway.harness, gateway.key, { ...CHAT, model: 'nope', stream: true }, PAGE);
    expect(refusedStream.status).toBe(404);
    expect(refusedStream.headers['access-control-allow-origin']).toBe(PAGE);

    const badKey = await chat(gateway.harness, 'tg-not-a-key', CHAT, PAGE);
    expect(badKey.status).toBe(401);
    expect(badKey.headers['access-control-allow-origin']).toBe(PAGE);
    expect(JSON.parse(badKey.text).error.code).toBe('invalid_api_key');
  });
});

describe('CORS for any origin', () => {
  const gateway = gatewayFor({ ...fastSimulatedConfig, server: { cors: { origins: ['*'] } } });

  it('allows every origin with the wildcard, and caches preflights for the default 600 s', async () => {
    const answer = await preflight(gateway.harness, OTHER_PAGE, '/v1/models');
    expect(answer.statusCode).toBe(204);
    expect(answer.headers['access-control-allow-origin']).toBe('*');
    expect(answer.headers['access-control-max-age']).toBe('600');
  });
});

describe('server.cors in the configuration', () => {
  it('refuses an origin with a path, or a bare host, naming the entry', () => {
    for (const origin of ['https://app.example.com/', 'app.example.com', 'https://app.example.com/chat']) {
      expect(() => parseConfigDocument({ server: { cors: { origins: [PAGE, origin] } } })).toThrow(
        /server\.cors\.origins\[1\]/,
      );
    }
    expect(() => parseConfigDocument({ server: { cors: { origins: [PAGE], max_age_s: -1 } } })).toThrow(
      /server\.cors\.max_age_s/,
    );
  });
});

describe('bodies the gateway cannot read', () => {
  const gateway = gatewayFor();

  async function post(body: string | Buffer, headers: Record<string, string>) {
    const response = await request(`${gateway.harness.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${gateway.key}`, ...headers },
      body,
    });
    return { status: response.statusCode, body: (await response.body.json()) as { error: { code: string } } };
  }

  it('refuses JSON sent as text/plain with 415, as any type but JSON', async () => {
    for (const type of ['text/plain', 'text/plain; charset=utf-8', 'application/x-www-form-urlencoded']) {
      const answer = await post(JSON.stringify(CHAT), { 'content-type': type });
      expect(answer.status, type).toBe(415);
      expect(answer.body.error.code).toBe('unsupported_media_type');
    }
  });

  it('says a compressed body is not read, instead of calling its JSON broken', async () => {
    const gzipped = await post(gzipSync(JSON.stringify(CHAT)), {
      'content-type': 'application/json',
      'content-encoding': 'gzip',
    });
    expect(gzipped.status).toBe(415);
    expect(gzipped.body.error.code).toBe('unsupported_content_encoding');
    // Broken JSON under `identity` is still just broken JSON.
    const broken = await post('{"model":', { 'content-type': 'application/json', 'content-encoding': 'identity' });
    expect(broken.status).toBe(400);
    expect(broken.body.error.code).toBe('invalid_json');
    // The header alone refuses nothing: a plain body that parses is served.
    const plain = await post(JSON.stringify(CHAT), { 'content-type': 'application/json', 'content-encoding': 'br' });
    expect(plain.status).toBe(200);
  });
});
