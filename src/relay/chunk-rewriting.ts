/**
 * Edits of relayed JSON that must not cost a parse and a stringify per chunk: renaming the model, stating the
 * service tier, dropping the `"usage":null` forced `include_usage` adds. Chunks that really need a structural
 * change (usage attached to a content chunk the client did not ask for) are re-serialized.
 */
import { toOpenAIUsage, type Usage } from '../upstreams/usage.js';

const NULL_USAGE = ',"usage":null';
const OPEN_BRACE = 0x7b;

/**
 * A function that rewrites one chunk's JSON text: the model the upstream names becomes the public name, whatever
 * the upstream calls it (its configured model id, or a resolved one: `gpt-4o` answers as `gpt-4o-2024-08-06`; the
 * first `"model":` can only match at a real key, since quotes inside strings are escaped), `service_tier` is set to
 * the tier used when the chunk does not state one, and `,"usage":null` is dropped when the client did not ask for
 * usage.
 */
export function chunkRewriter(options: {
  publicModel: string;
  serviceTier: string | undefined;
  stripNullUsage: boolean;
}): (data: string) => string {
  const publicModel = JSON.stringify(options.publicModel);
  const tier =
    options.serviceTier === undefined ? undefined : `{"service_tier":${JSON.stringify(options.serviceTier)},`;
  return (data) => {
    let result = renameModel(data, publicModel);
    if (options.stripNullUsage) {
      // The compact form, as servers send it, without a regular expression; any other spacing with one.
      const at = result.indexOf(NULL_USAGE);
      if (at !== -1) result = result.slice(0, at) + result.slice(at + NULL_USAGE.length);
      else if (result.includes('"usage"')) result = result.replace(/,\s*"usage"\s*:\s*null/, '');
    }
    if (tier !== undefined && result.charCodeAt(0) === OPEN_BRACE && !result.includes('"service_tier"')) {
      const rest = result.slice(1);
      result = rest.trimStart().startsWith('}') ? `${tier.slice(0, -1)}}` : tier + rest;
    }
    return result;
  };
}

const MODEL_KEY = '"model":';
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const SPACE = 0x20;

/** `data` with the value of its first `"model"` key set to `quotedModel` (a JSON string); unchanged if it has none. */
function renameModel(data: string, quotedModel: string): string {
  const key = data.indexOf(MODEL_KEY);
  if (key === -1) return data;
  let start = key + MODEL_KEY.length;
  while (data.charCodeAt(start) === SPACE) start++;
  if (data.charCodeAt(start) !== QUOTE) return data;
  // The closing quote: the first one not escaped by a backslash.
  let end = start + 1;
  for (; end < data.length; end++) {
    const code = data.charCodeAt(end);
    if (code === BACKSLASH) end++;
    else if (code === QUOTE) break;
  }
  if (end >= data.length) return data;
  if (end + 1 - start === quotedModel.length && data.startsWith(quotedModel, start)) return data;
  return `${data.slice(0, key)}"model":${quotedModel}${data.slice(end + 1)}`;
}

/** A chunk without its `usage` field (re-serialized: rare, only for usage attached to a content chunk). */
export function withoutUsage(data: string): string {
  const chunk = JSON.parse(data) as Record<string, unknown>;
  delete chunk.usage;
  return JSON.stringify(chunk);
}

/**
 * The usage-only chunk the gateway sends when the client asked for usage and the upstream sent none: the id,
 * object, creation time and system fingerprint of the chunks before it, the tier they stated.
 */
export function synthesizedUsageChunk(
  lastChunk: string | undefined,
  model: string,
  usage: Usage,
  serviceTier: string | undefined,
): string {
  let id = 'chatcmpl-tollgate';
  let object = 'chat.completion.chunk';
  let created = Math.floor(Date.now() / 1000);
  let fingerprint: string | undefined;
  if (lastChunk !== undefined) {
    try {
      const parsed = JSON.parse(lastChunk) as Record<string, unknown>;
      if (typeof parsed.id === 'string') id = parsed.id;
      if (typeof parsed.object === 'string') object = parsed.object;
      if (typeof parsed.created === 'number') created = parsed.created;
      if (typeof parsed.system_fingerprint === 'string') fingerprint = parsed.system_fingerprint;
    } catch {
      // The chunk was already relayed as received; a malformed one only costs us its id here.
    }
  }
  return JSON.stringify({
    id,
    object,
    created,
    model,
    ...(serviceTier === undefined ? {} : { service_tier: serviceTier }),
    ...(fingerprint === undefined ? {} : { system_fingerprint: fingerprint }),
    choices: [],
    usage: toOpenAIUsage(usage),
  });
}
