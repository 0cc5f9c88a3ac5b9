import path from 'node:path';
import type { Logger } from 'pino';
import { SettlementSpool } from '../metering/settlement-spool.js';
import { DEFAULT_SETTLEMENT_BATCH } from '../metering/settlement-writer.js';
import type { LedgerStore } from '../store/ledger-store.js';

/** Where a gateway keeps settlements spooled while its store is down. */
export function spoolDirectory(dataDir: string): string {
  return path.join(dataDir, 'spool');
}

/** Where a gateway journals settlements before their commit (see `SettlementJournal`). */
export function journalDirectory(dataDir: string): string {
  return path.join(dataDir, 'journal');
}

/**
 * Settles into the store what processes that are gone left in the data directory: settlements spooled while the
 * store was down, and journaled ones a `kill -9` kept from their commit. Idempotent by request id. This must run
 * before stream checkpoints are recovered: a stream's real final settlement must win over the estimate its
 * checkpoint would be billed as.
 */
export async function settleLeftSettlements(
  dataDir: string,
  store: Pick<LedgerStore, 'settle'>,
  logger: Logger,
): Promise<void> {
  const sources = [
    { directory: spoolDirectory(dataDir), what: 'spooled by a process that stopped while the store was down' },
    { directory: journalDirectory(dataDir), what: 'journaled by a process that stopped before committing them' },
  ];
  for (const { directory, what } of sources) {
    const result = await new SettlementSpool(directory, logger).drain(
      (batch, encoded) => store.settle(batch, encoded),
      {
        batchSize: DEFAULT_SETTLEMENT_BATCH,
        orphans: true,
      },
    );
    if (result.settled + result.rejected + result.left > 0)
      logger.warn({ ...result }, `settled the settlements ${what}`);
  }
}
