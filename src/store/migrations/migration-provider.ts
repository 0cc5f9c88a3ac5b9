import type { Migration, MigrationProvider } from 'kysely';
import { initialSchema } from './0001-initial-schema.js';
import { ledgerSchema } from './0002-ledger.js';
import { batchesSchema } from './0003-batches.js';
import { requestLogAttemptsSchema } from './0004-request-log-attempts.js';
import { ledgerIngestSchema } from './0005-ledger-ingest.js';
import { ledgerInRequestLogSchema } from './0006-ledger-in-request-log.js';
import { daysFromHoursSchema } from './0007-days-from-hours.js';
import { reservationOwnersSchema } from './0008-reservation-owners.js';
import { tenantListIndexSchema } from './0009-tenant-list-index.js';
import { fileExpirySchema } from './0010-file-expiry.js';
import { responsesSchema } from './0011-responses.js';
import { conversationsSchema } from './0012-conversations.js';
import { backgroundResponsesSchema } from './0013-background-responses.js';
import { responseEventsSchema } from './0014-response-events.js';

/**
 * Every migration, in order. Imported statically (not read from a folder at run time) so the compiled `dist/`
 * works without the TypeScript sources. Names sort lexicographically; never rename or reorder a shipped one.
 */
const migrations: Record<string, Migration> = {
  '0001-initial-schema': initialSchema,
  '0002-ledger': ledgerSchema,
  '0003-batches': batchesSchema,
  '0004-request-log-attempts': requestLogAttemptsSchema,
  '0005-ledger-ingest': ledgerIngestSchema,
  '0006-ledger-in-request-log': ledgerInRequestLogSchema,
  '0007-days-from-hours': daysFromHoursSchema,
  '0008-reservation-owners': reservationOwnersSchema,
  '0009-tenant-list-index': tenantListIndexSchema,
  '0010-file-expiry': fileExpirySchema,
  '0011-responses': responsesSchema,
  '0012-conversations': conversationsSchema,
  '0013-background-responses': backgroundResponsesSchema,
  '0014-response-events': responseEventsSchema,
};

/** The migration provider for Kysely's `Migrator`. */
export const migrationProvider: MigrationProvider = {
  async getMigrations(): Promise<Record<string, Migration>> {
    return migrations;
  },
};
