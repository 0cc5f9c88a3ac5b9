/**
 * `truncation: "auto"` of the Responses API. When the conversation a request carries (its history and its input) does
 * not fit its model's context window, the oldest messages are left out of the chat request the upstream receives, as
 * OpenAI drops items from the beginning of the conversation.
 *
 * - The request's own `instructions` (the leading system message) always stay.
 * - The cut never falls inside a tool round: a tool result whose call was left out goes too, since chat completions
 *   refuse a tool message that answers no call. So the cut lands before a message that is not a tool result.
 * - The last such cut is as far as it goes: a request whose last turn alone does not fit is left to the relay's
 *   context check, which refuses it (400 `context_length_exceeded`) as it would with truncation disabled.
 *
 * Only the upstream call is shaped here: what is stored (the response's input items, the conversation's items) is the
 * request as the client sent it.
 */

/** A chat message as the upstream receives it. */
type ChatMessage = Record<string, unknown>;

/** What `truncateToWindow` needs besides the chat request. */
export interface TruncationOptions {
  /** Leading messages that always stay: 1 when the request has `instructions` (its system message), else 0. */
  pinned: number;
  /** Prompt tokens the request may have: the context window less the output it asks for. */
  budget: number;
  /** The prompt tokens of a chat request, as the relay meters them (tools included). */
  count: (chat: Readonly<Record<string, unknown>>) => number | Promise<number>;
}

/** The result: the chat request to send, how many of its messages were left out (0 when it fit), and its count. */
export interface Truncated {
  chat: Record<string, unknown>;
  dropped: number;
  /** The prompt tokens of `chat`, as `count` counted them. */
  promptTokens: number;
}

/**
 * `chat` as it fits in `budget` prompt tokens, dropping the fewest leading messages (after the pinned ones) that make
 * it fit. Counts the prompt once when it fits, and O(log n) times when it does not (a binary search over the cuts:
 * dropping more never counts more).
 */
export async function truncateToWindow(chat: Record<string, unknown>, options: TruncationOptions): Promise<Truncated> {
  const whole = await options.count(chat);
  if (whole <= options.budget) return { chat, dropped: 0, promptTokens: whole };
  const messages = chat.messages as ChatMessage[];
  const pinned = messages.slice(0, options.pinned);
  const rest = messages.slice(options.pinned);
  const cuts = cutsOf(rest);
  const cutAt = async (index: number): Promise<Truncated> => {
    const kept = withoutOrphanedResults(rest, cuts[index] ?? 0);
    const cut = { ...chat, messages: [...pinned, ...kept] };
    return { chat: cut, dropped: rest.length - kept.length, promptTokens: await options.count(cut) };
  };
  // The first cut (nothing dropped) did not fit: find the first that does; failing that, the last, counted already
  // when the search ends there.
  let low = 1;
  let high = cuts.length - 1;
  let fits: Truncated | undefined;
  let last: Truncated | undefined;
  while (low <= high) {
    const middle = (low + high) >>> 1;
    const candidate = await cutAt(middle);
    if (middle === cuts.length - 1) last = candidate;
    if (candidate.promptTokens <= options.budget) {
      fits = candidate;
      high = middle - 1;
    } else low = middle + 1;
  }
  return fits ?? last ?? { chat, dropped: 0, promptTokens: whole };
}

/** Where the messages may be cut: 0, and before every later message that is not a tool result. */
function cutsOf(messages: readonly ChatMessage[]): number[] {
  const cuts = [0];
  for (let index = 1; index < messages.length; index++) {
    if (messages[index]?.role !== 'tool') cuts.push(index);
  }
  return cuts;
}

/** The messages from `cut` on, less any tool result answering a call made before the cut. */
function withoutOrphanedResults(messages: readonly ChatMessage[], cut: number): ChatMessage[] {
  const droppedCalls = new Set<unknown>();
  for (const message of messages.slice(0, cut)) {
    if (!Array.isArray(message.tool_calls)) continue;
    for (const call of message.tool_calls as Array<{ id?: unknown }>) droppedCalls.add(call.id);
  }
  const kept = messages.slice(cut);
  if (droppedCalls.size === 0) return kept;
  return kept.filter((message) => message.role !== 'tool' || !droppedCalls.has(message.tool_call_id));
}
