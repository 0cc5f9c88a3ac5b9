/**
 * Compaction (`POST /v1/responses/compact`, `client.responses.compact`), as on OpenAI: a long conversation becomes a
 * short one the client goes on from. The model of the request writes a summary of the conversation; the compacted
 * conversation is the client's own messages (user, system and developer), verbatim and in order, followed by one
 * `compaction` item that holds the summary. What the model made (assistant messages, reasoning, function calls) and
 * the tools' outputs are in the summary only; so is the summary of any earlier compaction item.
 *
 * The summary travels sealed (`encrypted_content`): AES-256-GCM under a key of this gateway, bound to the tenant it
 * was made for, so a client carries it without reading or changing it, and no other tenant can use it. When a request
 * (Responses, input token counts, a conversation's items, a batch line) holds a compaction item, the gateway opens it and the model
 * reads the summary as an assistant message in its place: the one role every chat template accepts there. Nothing is
 * stored by compaction itself; a compaction item stored in a conversation or with a response stays readable as long
 * as the secret that sealed it is one of the gateway's (rotation: `CompactionSeal`).
 */
import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';
import { newItemId } from '../api/responses/responses-object.js';
import { InvalidRequestError, UpstreamError } from '../errors/gateway-error.js';

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

/** The prefix of a sealed summary, the format's version: `tgc1.<key id>.<iv, ciphertext, tag in base64url>`. */
const SEALED_PREFIX = 'tgc1.';
const IV_BYTES = 12;
const TAG_BYTES = 16;

/** One key: derived from a secret, named by a short id so that an item says which key sealed it. */
interface SealKey {
  id: string;
  key: Buffer;
}

function sealKey(secret: string): SealKey {
  const key = Buffer.from(hkdfSync('sha256', secret, 'tollgate', 'responses compaction v1', 32));
  // The id is a hash of the key, not of the secret: it tells nothing of either.
  return { id: createHash('sha256').update(key).digest('base64url').slice(0, 8), key };
}

/**
 * Seals and opens compaction summaries. It takes the gateway's secrets, newest first: the first seals, every one
 * opens, so that a secret can be replaced without breaking the compaction items clients and conversations hold
 * (give the new one first and keep the old one after it until those items are gone: in clients, in conversations, and in
 * batches not yet finished, whose lines are opened again when they run).
 */
export class CompactionSeal {
  private readonly keys: SealKey[];

  /**
   * `secrets`: shared by every process of the gateway (`responses.compaction_secret_env`, or generated once into the
   * store). `onRefused` is told of each item it could not open (a metric).
   */
  constructor(
    secrets: readonly string[],
    private readonly onRefused: (reason: 'unknown_key' | 'unverified') => void = () => {},
  ) {
    if (secrets.length === 0 || secrets.some((secret) => secret === '')) {
      throw new Error('CompactionSeal needs at least one secret, none of them empty');
    }
    this.keys = secrets.map(sealKey);
  }

  /** `summary`, sealed for `tenantId` with the newest key. */
  seal(tenantId: string, summary: string): string {
    const { id, key } = this.keys[0]!;
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', key, iv);
    cipher.setAAD(Buffer.from(tenantId, 'utf8'));
    const sealed = Buffer.concat([cipher.update(JSON.stringify({ summary }), 'utf8'), cipher.final()]);
    return `${SEALED_PREFIX}${id}.${Buffer.concat([iv, sealed, cipher.getAuthTag()]).toString('base64url')}`;
  }

  /**
   * The summary `sealed` holds; a 400 naming `param` (the item's `encrypted_content`) when it was not sealed by this
   * gateway (with one of its keys) for `tenantId`, or was changed.
   */
  open(tenantId: string, sealed: string, param: string): string {
    const refused = (reason: 'unknown_key' | 'unverified') => {
      this.onRefused(reason);
      return new InvalidRequestError(
        `The encrypted content of '${param}' could not be verified: it was not made by this gateway for this tenant, or it was changed.`,
        { param, code: 'invalid_encrypted_content' },
      );
    };
    const [prefix, keyId, payload] = sealed.split('.');
    if (`${prefix}.` !== SEALED_PREFIX || payload === undefined) throw refused('unverified');
    const key = this.keys.find((candidate) => candidate.id === keyId)?.key;
    if (key === undefined) throw refused('unknown_key');
    const bytes = Buffer.from(payload, 'base64url');
    if (bytes.length < IV_BYTES + TAG_BYTES) throw refused('unverified');
    let summary: unknown;
    try {
      const decipher = createDecipheriv('aes-256-gcm', key, bytes.subarray(0, IV_BYTES));
      decipher.setAAD(Buffer.from(tenantId, 'utf8'));
      decipher.setAuthTag(bytes.subarray(bytes.length - TAG_BYTES));
      const text = Buffer.concat([
        decipher.update(bytes.subarray(IV_BYTES, bytes.length - TAG_BYTES)),
        decipher.final(),
      ]);
      summary = (JSON.parse(text.toString('utf8')) as { summary?: unknown }).summary;
    } catch {
      // Another tenant or a changed byte fails `final()`: `summary` stays unset, and the client is told as below.
    }
    if (typeof summary !== 'string') throw refused('unverified');
    return summary;
  }

  /** Opens the compaction items of `tenantId`'s requests (`chatRequestOf`'s `openCompaction`). */
  openerFor(tenantId: string): (sealed: string, param: string) => string {
    return (sealed, param) => this.open(tenantId, sealed, param);
  }
}

/**
 * The items a compacted conversation keeps of `items` (input and output items, oldest first, each with an `id`, as
 * `inputItemsOf` and `outputItemsOf` give them): the messages of the client's own roles, verbatim.
 */
export function keptItems(items: readonly Record<string, unknown>[]): Record<string, unknown>[] {
  return items.filter((item) => item.type === 'message' && KEPT_ROLES.has(String(item.role)));
}

/**
 * The output tokens the summary written from a prompt of `promptTokens` (the conversation and the instructions to
 * summarise it) may take on a model of `contextWindow`: no more than that prompt (a summary as long as what it
 * summarises saves nothing), nor `COMPACTION_MAX_OUTPUT_TOKENS`, nor what the window leaves; and at least
 * `COMPACTION_MIN_OUTPUT_TOKENS`, so a short conversation's summary may be longer than it. A 400
 * `context_length_exceeded` when the window leaves fewer than that.
 */
export function summaryTokenLimit(promptTokens: number, contextWindow: number): number {
  const room = contextWindow - promptTokens;
  if (room < COMPACTION_MIN_OUTPUT_TOKENS) {
    throw new InvalidRequestError(
      `The conversation leaves ${Math.max(room, 0)} of this model's ${contextWindow} tokens for its summary; compaction needs ${COMPACTION_MIN_OUTPUT_TOKENS}. Compact it earlier, or with a model with a longer context window.`,
      { param: 'input', code: 'context_length_exceeded' },
    );
  }
  return Math.min(COMPACTION_MAX_OUTPUT_TOKENS, room, Math.max(COMPACTION_MIN_OUTPUT_TOKENS, promptTokens));
}

/**
 * The compacted conversation (`CompactResource`) of `items` (the conversation, oldest first, as `keptItems` takes
 * them): the client's messages, then the compaction item holding `sealed`. `receivedAt` is epoch ms.
 */
export function compactedResponse(
  items: readonly Record<string, unknown>[],
  sealed: string,
  receivedAt: number,
  usage: Record<string, unknown>,
): Record<string, unknown> {
  return {
    id: newItemId('resp'),
    object: 'response.compaction',
    output: [...keptItems(items), { id: newItemId('cmp'), type: 'compaction', encrypted_content: sealed }],
    created_at: Math.floor(receivedAt / 1000),
    usage,
  };
}

/**
 * The summary a chat completion holds. A 502 `compaction_failed` when it holds none (no text, a refusal, a content
 * filter): sealing nothing would leave the client a conversation without its past. A summary cut at its token limit
 * (`length`) is kept: it holds as much as fits.
 */
export function summaryOf(completion: Record<string, unknown>): string {
  const choice = (completion.choices as Array<Record<string, unknown>> | undefined)?.[0];
  const content = (choice?.message as { content?: unknown } | undefined)?.content;
  if (typeof content !== 'string' || content.trim() === '' || choice?.finish_reason === 'content_filter') {
    throw new UpstreamError(
      'The model wrote no summary of the conversation (an empty answer, a refusal or a content filter); it was not compacted.',
      { code: 'compaction_failed', retryable: false },
    );
  }
  return content;
}
