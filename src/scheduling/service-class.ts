/**
 * Tollgate's service classes, highest first. OpenAI's `service_tier` (`priority`, `default`, `flex`, `auto`) maps onto
 * the first three; `batch` is work that may wait for hours.
 */
import { assertNever } from '../errors/assert-never.js';

export const serviceClasses = ['priority', 'default', 'flex', 'batch'] as const;

/** One service class. */
export type ServiceClass = (typeof serviceClasses)[number];

/** Position of a class in priority order: 0 for `priority`, 3 for `batch`. */
export function serviceClassRank(serviceClass: ServiceClass): number {
  switch (serviceClass) {
    case 'priority':
      return 0;
    case 'default':
      return 1;
    case 'flex':
      return 2;
    case 'batch':
      return 3;
    default:
      return assertNever(serviceClass);
  }
}

/** A value per service class. */
export type PerServiceClass<T> = Record<ServiceClass, T>;

/** Builds a record with one value per class. */
export function perServiceClass<T>(make: (serviceClass: ServiceClass) => T): PerServiceClass<T> {
  return {
    priority: make('priority'),
    default: make('default'),
    flex: make('flex'),
    batch: make('batch'),
  };
}
