/** A local HTTP server that records the budget-alert webhooks it receives (the `data` of each event). */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

/** What one budget-alert webhook said. */
export interface ReceivedAlert {
  scope_id?: string;
  threshold?: number;
}

/** A started receiver: its URL, the alerts so far, and a way to wait for the first and to stop it. */
export interface WebhookReceiver {
  url: string;
  received: ReceivedAlert[];
  /** Resolves when at least one alert arrived, or after `timeoutMs`. */
  firstAlert(timeoutMs: number): Promise<void>;
  close(): Promise<void>;
}

export async function startWebhookReceiver(): Promise<WebhookReceiver> {
  const received: ReceivedAlert[] = [];
  const server = createServer((request, response) => {
    let body = '';
    request.on('data', (part: Buffer) => {
      body += part.toString('utf8');
    });
    request.on('end', () => {
      received.push((JSON.parse(body) as { data: ReceivedAlert }).data);
      response.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`,
    received,
    firstAlert: async (timeoutMs) => {
      const deadline = Date.now() + timeoutMs;
      while (received.length === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    },
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
