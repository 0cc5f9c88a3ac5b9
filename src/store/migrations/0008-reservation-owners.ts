import type { Kysely, Migration } from 'kysely';

/**
 * Who holds each wallet reservation, so a process that dies does not leave its reservations behind.
 *
 * With several processes on one store (cluster mode, or workers on one SQLite file) a reservation is a share of
 * `wallets.reserved`, which has no owner: a process killed with requests in flight left their amounts reserved, and
 * the tenant's spendable funds lower, for good on PostgreSQL (until the next start in embedded mode).
 *
 * - `reservation_holds`: what each owner (one gateway process) holds per tenant. A reservation with an owner adds
 *   to its row and to `wallets.reserved` in one step, its release takes from both, so `wallets.reserved` is the sum
 *   of the holds (plus any reservation taken without an owner).
 * - `reservation_owners`: each owner's last heartbeat. An owner silent for longer than the timeout is dead: any
 *   process releases its holds (`sweepReservationOwners`), and its later releases find no hold and release nothing.
 * - `stream_checkpoints.reservation_owner`: the owner of a checkpointed stream's reservation, released from that
 *   owner's hold when a crash leaves the checkpoint to be recovered.
 */
export const reservationOwnersSchema: Migration = {
  async up(db: Kysely<unknown>): Promise<void> {
    await db.schema
      .createTable('reservation_holds')
      .addColumn('owner_id', 'varchar(255)', (column) => column.notNull())
      .addColumn('tenant_id', 'varchar(255)', (column) => column.notNull())
      .addColumn('amount', 'bigint', (column) => column.notNull())
      .addPrimaryKeyConstraint('reservation_holds_pk', ['owner_id', 'tenant_id'])
      .execute();
    await db.schema
      .createTable('reservation_owners')
      .addColumn('owner_id', 'varchar(255)', (column) => column.primaryKey())
      .addColumn('heartbeat_at', 'bigint', (column) => column.notNull())
      .execute();
    await db.schema.alterTable('stream_checkpoints').addColumn('reservation_owner', 'varchar(255)').execute();
  },

  async down(db: Kysely<unknown>): Promise<void> {
    await db.schema.alterTable('stream_checkpoints').dropColumn('reservation_owner').execute();
    await db.schema.dropTable('reservation_owners').execute();
    await db.schema.dropTable('reservation_holds').execute();
  },
};
