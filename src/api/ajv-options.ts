/**
 * How Fastify's validator treats request bodies, on the gateway and on the CLI's in-process admin routes alike: a
 * body is validated as it came, never coerced, trimmed or filled with defaults into passing.
 */
export const REQUEST_AJV_OPTIONS = {
  customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: false, allErrors: false },
} as const;
