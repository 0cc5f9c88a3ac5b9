/** What `tollgate serve` prints once it listens: where it is, how to authenticate, how to call it. */

/** Inputs of the banner. */
export interface StartBannerInput {
  url: string;
  adminToken: string;
  /** The demo key, on first start only. */
  demoKey: string | undefined;
  models: readonly string[];
  store: string;
  workers: number;
  /** `admission.store`: with several workers, `memory` counts limits in each worker apart. */
  admissionStore: 'memory' | 'redis';
}

/** Why limits may be exceeded together: several workers, or processes on one PostgreSQL store, counting apart. */
function admissionNote(input: StartBannerInput): string[] {
  if (input.admissionStore !== 'memory') return [];
  if (input.workers > 1) {
    return [
      `Note: with admission.store: memory each worker counts rate limits, hard budgets and fair share on its own,`,
      `so together the ${input.workers} workers may let through up to ${input.workers} times a limit; set`,
      'admission.store: redis to share them.',
    ];
  }
  if (input.store.startsWith('postgres')) {
    return [
      'Note: with admission.store: memory each process on this store counts rate limits, hard budgets and fair share',
      'on its own, so N processes may let through up to N times a limit; set admission.store: redis to share them.',
    ];
  }
  return [];
}

/** The banner text. */
export function formatStartBanner(input: StartBannerInput): string {
  const model = input.models[0] ?? 'MODEL';
  const key = input.demoKey ?? '<your API key>';
  const lines = [
    '',
    `Tollgate is listening on ${input.url}  (${input.workers} worker${input.workers === 1 ? '' : 's'}, store ${input.store})`,
    `Models: ${input.models.join(', ')}`,
    ...admissionNote(input),
    '',
    `Admin token: ${input.adminToken}`,
    input.demoKey === undefined
      ? 'Demo API key: created on first start and shown then only (create another: tollgate keys create --tenant ID)'
      : `Demo API key (shown once, keep it): ${input.demoKey}`,
    '',
    'Try it:',
    `  curl ${input.url}/v1/chat/completions \\`,
    `    -H "Authorization: Bearer ${key}" -H "Content-Type: application/json" \\`,
    `    -d '{"model":"${model}","messages":[{"role":"user","content":"Hello!"}]}'`,
    '',
    '  // npm i openai',
    "  import OpenAI from 'openai';",
    `  const client = new OpenAI({ baseURL: '${input.url}/v1', apiKey: '${key}' });`,
    `  const stream = await client.chat.completions.create({ model: '${model}', stream: true,`,
    "    messages: [{ role: 'user', content: 'Hello!' }] });",
    '  for await (const chunk of stream) process.stdout.write(chunk.choices[0]?.delta?.content ?? "");',
    '',
  ];
  return lines.join('\n');
}
