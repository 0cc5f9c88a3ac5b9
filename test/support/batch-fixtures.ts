/**
 * What the batch tests share: a slow simulated model to keep batches mid-way, input lines, JSONL in and out, and
 * polling a batch through the official SDK until it reaches a state.
 */
import type OpenAI from 'openai';
import { toFile } from 'openai';
import { pricedSimulatedConfig } from './test-gateway.js';

/** Slow on purpose: a 40-token answer takes ~0.8 s, so a batch stays mid-way for a while. */
export const slowUpstream = {
  name: 'slow',
  type: 'simulated',
  replicas: 1,
  profile: { t_prefill_us: 1, t_fixed_ms: 20, t_seq_ms: 0.01, max_batch: 64, kv_tokens: 262_144 },
};

/**
 * The priced fleet with extra upstreams and models, each extra model served by the upstream of its name and priced
 * as sim-pro-32k.
 */
export function pricedFleetWith(upstreams: readonly (typeof slowUpstream)[]) {
  const base = pricedSimulatedConfig.pricing.versions[0]!;
  return {
    ...pricedSimulatedConfig,
    upstreams: [...pricedSimulatedConfig.upstreams, ...upstreams],
    models: [
      ...pricedSimulatedConfig.models,
      ...upstreams.map((upstream) => ({
        name: `sim-${upstream.name}`,
        context_window: 32_768,
        deployments: [{ upstream: upstream.name, model: upstream.name }],
      })),
    ],
    pricing: {
      ...pricedSimulatedConfig.pricing,
      versions: [
        {
          ...base,
          models: {
            ...base.models,
            ...Object.fromEntries(upstreams.map((upstream) => [`sim-${upstream.name}`, base.models['sim-pro-32k']])),
          },
        },
      ],
    },
  };
}

/** List price in nano-yuan of sim-pro-32k (and the models priced as it): 800 per input token, 2000 per output token. */
export const listNano = (prompt: number, completion: number) => BigInt(prompt) * 800n + BigInt(completion) * 2000n;

/** A decimal amount string of the admin API ("-1.5", "0.000002") in nano units. */
export function decimalToNano(text: string): bigint {
  const negative = text.startsWith('-');
  const [whole, fraction = ''] = text.replace('-', '').split('.');
  const value = BigInt(whole!) * 1_000_000_000n + BigInt(fraction.padEnd(9, '0'));
  return negative ? -value : value;
}

/** One line of a batch input file. */
export interface InputLine {
  custom_id: string;
  method: string;
  url: string;
  body: Record<string, unknown>;
}

export function chatLine(
  customId: string,
  model: string,
  maxTokens: number,
  text = `Question ${customId}?`,
): InputLine {
  return {
    custom_id: customId,
    method: 'POST',
    url: '/v1/chat/completions',
    body: { model, messages: [{ role: 'user', content: text }], max_tokens: maxTokens },
  };
}

export const jsonl = (lines: readonly unknown[]) => `${lines.map((line) => JSON.stringify(line)).join('\n')}\n`;

/** Uploads a batch input file. */
export async function uploadInput(client: OpenAI, content: string | Buffer, name = 'input.jsonl') {
  return client.files.create({ file: await toFile(Buffer.from(content), name), purpose: 'batch' });
}

/** Uploads `lines` and starts a chat-completions batch of them, to finish within 24 h. */
export async function startChatBatch(client: OpenAI, lines: readonly InputLine[]): Promise<OpenAI.Batches.Batch> {
  return chatBatch(client, (await uploadInput(client, jsonl(lines))).id);
}

/** Creates a chat-completions batch of an uploaded file, to finish within 24 h. */
export function chatBatch(client: OpenAI, inputFileId: string): Promise<OpenAI.Batches.Batch> {
  return client.batches.create({
    input_file_id: inputFileId,
    endpoint: '/v1/chat/completions',
    completion_window: '24h',
  });
}

/** Polls a batch until `done` holds of it; throws with its state after `timeoutMs`. */
export async function waitForBatch(
  client: OpenAI,
  id: string,
  done: (batch: OpenAI.Batches.Batch) => boolean,
  timeoutMs = 20_000,
): Promise<OpenAI.Batches.Batch> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const batch = await client.batches.retrieve(id);
    if (done(batch)) return batch;
    if (Date.now() > deadline) throw new Error(`batch ${id}: ${batch.status} ${JSON.stringify(batch.request_counts)}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** A batch that will not change any more. */
export const isFinal = (batch: OpenAI.Batches.Batch) =>
  ['completed', 'failed', 'expired', 'cancelled'].includes(batch.status);

/** A batch in `status`. */
export const hasStatus = (status: OpenAI.Batches.Batch['status']) => (batch: OpenAI.Batches.Batch) =>
  batch.status === status;

/** The JSON lines of a file, read through the Files API. */
export async function readJsonl(client: OpenAI, fileId: string): Promise<any[]> {
  const text = await (await client.files.content(fileId)).text();
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line));
}
