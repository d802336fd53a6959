/** The one check for numeric options (node options, serve options): a bad value names the option and its range. */
import { ValidationError } from './errors.js';

/**
 * `value` (or `fallback` when absent) if it is a whole number in [min, max]; else SC_ERR_INVALID_OPTION.
 * `owner` prefixes the message (e.g. "serve").
 */
export function wholeNumberOption(name: string, value: number | undefined, fallback: number, min: number, max: number, owner?: string): number {
  const chosen = value ?? fallback;
  if (!Number.isSafeInteger(chosen) || chosen < min || chosen > max) {
    throw new ValidationError('SC_ERR_INVALID_OPTION', `${owner === undefined ? '' : `${owner}: `}${name} must be a whole number from ${min} to ${max}, got ${String(value)}.`);
  }
  return chosen;
}
