/**
 * Compaction (`POST /v1/responses/compact`, `client.responses.compact`), as on OpenAI: a long conversation becomes a
 * short one the client goes on from. The model of the request writes a summary of the conversation; the compacted
 * conversation is the client's own messages (user, system and developer), verbatim and in order, followed by one
 * `compaction` item that holds the summary. What the model made (assistant messages, reasoning, function calls) and
 * the tools' outputs are in the summary only; so is the summary of any earlier compaction item.
 *
 * The summary travels sealed (`encrypted_content`): AES-256-GCM under a key of this gateway, bound to the tenant it
 * was made for, so a client carries it without reading or changing it, and no other tenant can use it. When a request
 * (Responses, input token counts, a conversation's items) holds a compaction item, the gateway opens it and the model
 * reads the summary as an assistant message in its place: the one role every chat template accepts there. Nothing is
 * stored by compaction itself.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { InvalidRequestError } from '../errors/gateway-error.js';

/** What the model is asked, after the conversation, to write the summary. */
export const COMPACTION_PROMPT = [
  'Stop here: the conversation above is about to be compacted to save context.',
  'Write a checkpoint summary that lets you continue the work without it: the goal and the constraints the user gave,',
  'what has been done and decided so far, facts, names, numbers and results you will need again, the state of any',
  'unfinished task, and the next steps. The user messages are kept verbatim, so do not repeat them; do not address',
  'the user. Write only the summary.',
].join(' ');

/** The most output tokens a summary may take. */
export const COMPACTION_MAX_OUTPUT_TOKENS = 4_096;

/** The fewest a conversation must leave of its model's window for its summary; one that leaves fewer is refused. */
export const COMPACTION_MIN_OUTPUT_TOKENS = 256;

/** The roles of the messages a compacted conversation keeps verbatim: the client's own. */
const KEPT_ROLES = new Set(['user', 'system', 'developer']);

/** The prefix of a sealed summary: the format's version. */
const SEALED_PREFIX = 'tgc1.';
const IV_BYTES = 12;
const TAG_BYTES = 16;

/** Seals and opens compaction summaries with a key derived from one gateway secret. */
export class CompactionSeal {
  private readonly key: Buffer;

  /** `secret`: shared by every process of the gateway (`responses.compaction_secret_env`, or generated once). */
  constructor(secret: string) {
    this.key = Buffer.from(hkdfSync('sha256', secret, 'tollgate', 'responses compaction v1', 32));
  }

  /** `summary`, sealed for `tenantId`. */
  seal(tenantId: string, summary: string): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    cipher.setAAD(Buffer.from(tenantId, 'utf8'));
    const sealed = Buffer.concat([cipher.update(JSON.stringify({ summary }), 'utf8'), cipher.final()]);
    return `${SEALED_PREFIX}${Buffer.concat([iv, sealed, cipher.getAuthTag()]).toString('base64url')}`;
  }

  /**
   * The summary `sealed` holds; a 400 naming `param` (the item's `encrypted_content`) when it was not sealed by this
   * gateway for `tenantId`, or was changed.
   */
  open(tenantId: string, sealed: string, param: string): string {
    const refused = () =>
      new InvalidRequestError(
        `The encrypted content of '${param}' could not be verified: it was not made by this gateway for this project, or it was changed.`,
        { param, code: 'invalid_encrypted_content' },
      );
    if (!sealed.startsWith(SEALED_PREFIX)) throw refused();
    const bytes = Buffer.from(sealed.slice(SEALED_PREFIX.length), 'base64url');
    if (bytes.length < IV_BYTES + TAG_BYTES) throw refused();
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.key, bytes.subarray(0, IV_BYTES));
      decipher.setAAD(Buffer.from(tenantId, 'utf8'));
      decipher.setAuthTag(bytes.subarray(bytes.length - TAG_BYTES));
      const text = Buffer.concat([
        decipher.update(bytes.subarray(IV_BYTES, bytes.length - TAG_BYTES)),
        decipher.final(),
      ]).toString('utf8');
      const summary = (JSON.parse(text) as { summary?: unknown }).summary;
      if (typeof summary !== 'string') throw refused();
      return summary;
    } catch {
      // A wrong key, tenant or tag fails `final()`; what it would say is the same to the client.
      throw refused();
    }
  }
}

/**
 * The items a compacted conversation keeps of `items` (input and output items, oldest first, each with an `id`, as
 * `inputItemsOf` and `outputItemsOf` give them): the messages of the client's own roles, verbatim.
 */
export function keptItems(items: readonly Record<string, unknown>[]): Record<string, unknown>[] {
  return items.filter((item) => item.type === 'message' && KEPT_ROLES.has(String(item.role)));
}
