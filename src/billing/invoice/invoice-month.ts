/** The calendar months an invoice may cover, and the check both invoice routes and the CLI make. */
import { InvalidRequestError } from '../../errors/gateway-error.js';

/** The first month an invoice covers: the ledger's times start at the Unix epoch. */
export const FIRST_INVOICE_MONTH = '1970-01';
/** The last month an invoice covers (four-digit years). */
export const LAST_INVOICE_MONTH = '9999-12';

/** Whether `month` is a calendar month `YYYY-MM` from `FIRST_INVOICE_MONTH` to `LAST_INVOICE_MONTH`. */
export function isInvoiceMonth(month: string): boolean {
  return /^\d{4}-(0[1-9]|1[0-2])$/.test(month) && month >= FIRST_INVOICE_MONTH && month <= LAST_INVOICE_MONTH;
}

/**
 * Refuses (400, param `invoice`) an invoice named by a month (`YYYY-MM`, or an id ending `_YYYYMM`) outside
 * `FIRST_INVOICE_MONTH`..`LAST_INVOICE_MONTH`. Anything else is left to the lookup (a 404 when nothing matches).
 */
export function checkInvoiceMonth(invoice: string): void {
  const named = /^(\d{4})-(\d{2})$/.exec(invoice) ?? /^inv_.+_(\d{4})(\d{2})$/.exec(invoice);
  if (named === null || isInvoiceMonth(`${named[1]}-${named[2]}`)) return;
  throw new InvalidRequestError(
    `Invalid value for 'invoice': expected a calendar month from ${FIRST_INVOICE_MONTH} to ${LAST_INVOICE_MONTH} ` +
      '(YYYY-MM) or an invoice id.',
    { param: 'invoice', code: 'invalid_value' },
  );
}
