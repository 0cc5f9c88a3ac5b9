import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { computeWebhookSignature, signWebhook, verifyWebhookSignature } from './webhook-signature.js';

const SECRET = 'whsec_test_0123456789';
const BODY = '{"id":"evt_1","type":"budget.threshold_crossed"}';
const NOW = 1_790_000_000;

function hmac(secret: string, text: string): string {
  return createHmac('sha256', secret).update(text, 'utf8').digest('hex');
}

describe('webhook signatures', () => {
  it('signs "<timestamp>.<body>" with HMAC-SHA256 in the t=…,v1=… header format', () => {
    expect(signWebhook(SECRET, NOW, BODY)).toBe(`t=${NOW},v1=${hmac(SECRET, `${NOW}.${BODY}`)}`);
    // RFC 4231 test case 2, to pin the primitive itself.
    expect(hmac('Jefe', 'what do ya want for nothing?')).toBe(
      '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843',
    );
  });

  it('accepts a valid signature within the tolerance, either side of now', () => {
    const header = signWebhook(SECRET, NOW, BODY);
    expect(verifyWebhookSignature(SECRET, header, BODY, NOW, 300)).toBe(true);
    expect(verifyWebhookSignature(SECRET, header, BODY, NOW + 300, 300)).toBe(true);
    expect(verifyWebhookSignature(SECRET, header, BODY, NOW - 300, 300)).toBe(true);
  });

  it('rejects a wrong secret, a changed body, a stale or future timestamp', () => {
    const header = signWebhook(SECRET, NOW, BODY);
    expect(verifyWebhookSignature('other-secret', header, BODY, NOW, 300)).toBe(false);
    expect(verifyWebhookSignature(SECRET, header, BODY.replace('evt_1', 'evt_2'), NOW, 300)).toBe(false);
    expect(verifyWebhookSignature(SECRET, header, BODY, NOW + 301, 300)).toBe(false);
    expect(verifyWebhookSignature(SECRET, header, BODY, NOW - 301, 300)).toBe(false);
  });

  it('rejects a signature moved to another timestamp (the timestamp is signed)', () => {
    const v1 = computeWebhookSignature(SECRET, NOW, BODY);
    expect(verifyWebhookSignature(SECRET, `t=${NOW + 10},v1=${v1}`, BODY, NOW + 10, 300)).toBe(false);
  });

  it('accepts any matching v1 entry (secret rotation) and rejects malformed headers', () => {
    const good = computeWebhookSignature(SECRET, NOW, BODY);
    const old = computeWebhookSignature('previous-secret', NOW, BODY);
    expect(verifyWebhookSignature(SECRET, `t=${NOW},v1=${old},v1=${good}`, BODY, NOW, 300)).toBe(true);
    for (const header of [
      undefined,
      '',
      `v1=${good}`,
      `t=${NOW}`,
      `t=abc,v1=${good}`,
      `t=${NOW},t=${NOW},v1=${good}`,
      `t=${NOW},v1=${good.slice(0, 63)}`,
      `t=${NOW},v1=${good}zz`,
      `t=${NOW},garbage`,
    ]) {
      expect(verifyWebhookSignature(SECRET, header, BODY, NOW, 300), String(header)).toBe(false);
    }
  });
});
