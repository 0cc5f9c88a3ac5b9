/**
 * OpenAI's `service_tier` on the way in and out: mapped onto Tollgate's classes, limited to what the plan allows
 * (a disallowed class is downgraded to the next allowed one below it), and reported back in OpenAI's vocabulary.
 */

import { assertNever } from '../errors/assert-never.js';
import { type ServiceClass, serviceClasses, serviceClassRank } from '../scheduling/service-class.js';

/** The class a request runs in. Batch lines are always `batch`. */
export function resolveServiceClass(
  requested: unknown,
  batch: boolean,
  allowed: readonly ServiceClass[],
): ServiceClass {
  const wanted: ServiceClass = batch
    ? 'batch'
    : requested === 'priority'
      ? 'priority'
      : requested === 'flex'
        ? 'flex'
        : 'default';
  if (allowed.includes(wanted)) return wanted;
  const rank = serviceClassRank(wanted);
  // Downgrade: the highest allowed class below the one asked for; failing that, the lowest allowed above it.
  const below = serviceClasses.filter((candidate) => serviceClassRank(candidate) > rank && allowed.includes(candidate));
  if (below.length > 0) return below[0]!;
  const above = serviceClasses.filter((candidate) => allowed.includes(candidate));
  return above[above.length - 1] ?? 'default';
}

/** The `service_tier` value a response reports for a class (OpenAI has no batch tier: batch lines say `default`). */
export function reportedServiceTier(serviceClass: ServiceClass): 'priority' | 'default' | 'flex' {
  switch (serviceClass) {
    case 'priority':
      return 'priority';
    case 'flex':
      return 'flex';
    case 'default':
    case 'batch':
      return 'default';
    default:
      return assertNever(serviceClass);
  }
}
