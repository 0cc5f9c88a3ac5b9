/**
 * The text a model generated in one choice's message (a whole answer) or delta (a stream chunk), as usage estimates
 * count it when an upstream reports none: content, refusal, reasoning, and the names and arguments of tool calls.
 */

/**
 * The generated text of `fields` (a `message` or a `delta`): content, refusal, reasoning (`reasoning_content`, else
 * `reasoning`: servers in transition send both with the same text), tool-call names and arguments (and the legacy
 * `function_call`'s).
 */
export function generatedText(fields: Record<string, unknown>): string {
  let text = '';
  if (typeof fields.content === 'string') text += fields.content;
  if (typeof fields.refusal === 'string') text += fields.refusal;
  if (typeof fields.reasoning_content === 'string' && fields.reasoning_content !== '') text += fields.reasoning_content;
  else if (typeof fields.reasoning === 'string') text += fields.reasoning;
  if (Array.isArray(fields.tool_calls)) {
    for (const call of fields.tool_calls) {
      if (call !== null && typeof call === 'object') text += functionText((call as { function?: unknown }).function);
    }
  }
  text += functionText(fields.function_call);
  return text;
}

function functionText(fn: unknown): string {
  if (fn === null || typeof fn !== 'object') return '';
  const { name, arguments: args } = fn as { name?: unknown; arguments?: unknown };
  return (typeof name === 'string' ? name : '') + (typeof args === 'string' ? args : '');
}
