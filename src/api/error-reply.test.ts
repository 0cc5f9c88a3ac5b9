import { Type } from '@sinclair/typebox';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toOpenAIErrorBody } from '../errors/gateway-error.js';
import { toClientError } from './error-reply.js';
import { ChatCompletionRequestSchema } from './request-schemas.js';

/** A Fastify app with the gateway's validator settings, schemas and error mapping, and one route whose code throws. */
let app: FastifyInstance;
beforeAll(async () => {
  app = Fastify({
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: false, allErrors: false } },
  });
  app.setErrorHandler((error, _request, reply) => {
    const clientError = toClientError(error, 1_000_000);
    void reply.status(clientError.status).send(toOpenAIErrorBody(clientError));
  });
  app.post('/chat', { schema: { body: ChatCompletionRequestSchema } }, async () => ({ ok: true }));
  const Strict = Type.Object({ name: Type.String() }, { additionalProperties: false });
  app.post('/strict', { schema: { body: Strict } }, async () => ({ ok: true }));
  app.post('/broken', async () => JSON.parse('{not json'));
  await app.ready();
});
afterAll(() => app.close());

async function post(url: string, payload: unknown) {
  const response = await app.inject({ method: 'POST', url, payload: payload as Record<string, unknown> });
  return { status: response.statusCode, error: response.json().error };
}

const messages = [{ role: 'user', content: 'Hi' }];

describe('the error a client gets for a body that fails validation', () => {
  it('names the constraint a union value broke rather than the type of the first branch', async () => {
    const stop = await post('/chat', { model: 'm', messages, stop: ['a', 'b', 'c', 'd', 'e'] });
    expect(stop.status).toBe(400);
    expect(stop.error).toMatchObject({ param: 'stop', code: 'invalid_value' });
    expect(stop.error.message).toMatch(/more than 4 items/);
  });

  it('names every type a value may have when it has none of them', async () => {
    const content = await post('/chat', { model: 'm', messages: [{ role: 'user', content: 5 }] });
    expect(content.error).toMatchObject({ param: 'messages[0].content', code: 'invalid_type' });
    expect(content.error.message).toBe("Invalid value for 'messages[0].content': expected string, array or null.");
    const temperature = await post('/chat', { model: 'm', messages, temperature: 9 });
    expect(temperature.error).toMatchObject({ param: 'temperature', code: 'invalid_value' });
    expect(temperature.error.message).toMatch(/<= 2/);
  });

  it('names an argument the route does not know', async () => {
    const unknown = await post('/strict', { name: 'a', colour: 'red' });
    expect(unknown.status).toBe(400);
    expect(unknown.error).toMatchObject({ param: 'colour', code: 'unknown_parameter' });
    expect(unknown.error.message).toBe("Unrecognized request argument supplied: 'colour'.");
    const missing = await post('/strict', {});
    expect(missing.error).toMatchObject({ param: 'name', code: 'missing_required_parameter' });
  });
});

describe('a JSON parse error', () => {
  it("is the client's when the body does not parse, and the gateway's own (500) when its code throws one", async () => {
    const response = await app.inject({
      method: 'POST',
      url: '/chat',
      headers: { 'content-type': 'application/json' },
      payload: '{"model": ',
    });
    expect(response.statusCode).toBe(400);
    expect(response.json().error.code).toBe('invalid_json');
    const broken = await post('/broken', {});
    expect(broken.status).toBe(500);
    expect(broken.error.code).not.toBe('invalid_json');
  });
});
