/**
 * Schemas of the inbound OpenAI request bodies, compiled once by Fastify's validator. Only the fields the gateway
 * reads or that OpenAI types strictly are described; every other field passes through to the upstream untouched.
 */
import { type Static, type TSchema, Type } from '@sinclair/typebox';

const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()]);

const TokenCount = Type.Integer({ minimum: 1 });

const StreamOptions = Nullable(
  Type.Object({ include_usage: Type.Optional(Type.Boolean()) }, { additionalProperties: true }),
);

const Stop = Nullable(Type.Union([Type.String(), Type.Array(Type.String(), { maxItems: 4 })]));

const ContentPart = Type.Object({ type: Type.String() }, { additionalProperties: true });

const ChatMessage = Type.Object(
  {
    role: Type.String({ minLength: 1 }),
    content: Type.Optional(Nullable(Type.Union([Type.String(), Type.Array(ContentPart)]))),
  },
  { additionalProperties: true },
);

/** OpenAI's `service_tier` values. */
export const serviceTierValues = ['auto', 'default', 'flex', 'priority', 'scale'] as const;

const commonGenerationFields = {
  model: Type.String({ minLength: 1 }),
  stream: Type.Optional(Nullable(Type.Boolean())),
  stream_options: Type.Optional(StreamOptions),
  max_tokens: Type.Optional(Nullable(TokenCount)),
  n: Type.Optional(Nullable(Type.Integer({ minimum: 1, maximum: 128 }))),
  temperature: Type.Optional(Nullable(Type.Number({ minimum: 0, maximum: 2 }))),
  top_p: Type.Optional(Nullable(Type.Number({ minimum: 0, maximum: 1 }))),
  presence_penalty: Type.Optional(Nullable(Type.Number({ minimum: -2, maximum: 2 }))),
  frequency_penalty: Type.Optional(Nullable(Type.Number({ minimum: -2, maximum: 2 }))),
  seed: Type.Optional(Nullable(Type.Integer())),
  stop: Type.Optional(Stop),
  user: Type.Optional(Type.String()),
  service_tier: Type.Optional(Nullable(Type.Union(serviceTierValues.map((tier) => Type.Literal(tier))))),
};

/** `POST /v1/chat/completions` */
export const ChatCompletionRequestSchema = Type.Object(
  {
    ...commonGenerationFields,
    messages: Type.Array(ChatMessage, { minItems: 1 }),
    max_completion_tokens: Type.Optional(Nullable(TokenCount)),
  },
  { additionalProperties: true },
);

/** `POST /v1/completions` */
export const CompletionRequestSchema = Type.Object(
  {
    ...commonGenerationFields,
    best_of: Type.Optional(Nullable(Type.Integer({ minimum: 1, maximum: 20 }))),
    prompt: Type.Union([
      Type.String(),
      Type.Array(Type.String(), { minItems: 1 }),
      Type.Array(Type.Integer({ minimum: 0 }), { minItems: 1 }),
      Type.Array(Type.Array(Type.Integer({ minimum: 0 }), { minItems: 1 }), { minItems: 1 }),
    ]),
  },
  { additionalProperties: true },
);

/** `POST /v1/embeddings` */
export const EmbeddingRequestSchema = Type.Object(
  {
    model: Type.String({ minLength: 1 }),
    input: Type.Union([
      Type.String(),
      Type.Array(Type.String(), { minItems: 1, maxItems: 2048 }),
      Type.Array(Type.Integer({ minimum: 0 }), { minItems: 1 }),
      Type.Array(Type.Array(Type.Integer({ minimum: 0 }), { minItems: 1 }), { minItems: 1, maxItems: 2048 }),
    ]),
    encoding_format: Type.Optional(Type.Union([Type.Literal('float'), Type.Literal('base64')])),
    dimensions: Type.Optional(Type.Integer({ minimum: 1 })),
    user: Type.Optional(Type.String()),
  },
  { additionalProperties: true },
);

export type ChatCompletionRequest = Static<typeof ChatCompletionRequestSchema>;
export type CompletionRequest = Static<typeof CompletionRequestSchema>;
export type EmbeddingRequest = Static<typeof EmbeddingRequestSchema>;
/** Any generation request body (chat or legacy completions). */
export type GenerationRequest = ChatCompletionRequest | CompletionRequest;
