/**
 * A simulated card processor, standing in for a payment provider's API: it answers after a network-like
 * delay, and its answer depends on the card number, like a provider's test cards:
 *
 *   4242 4242 4242 4242   approved
 *   4000 0000 0000 9995   insufficient funds on the first two attempts, then approved (a soft decline)
 *   4000 0000 0000 0119   processing error, every time (soft: worth retrying, but never succeeds)
 *   4000 0000 0000 0002   card declined (hard: retrying will not help)
 *
 * Attempts are counted per idempotency key, as a real provider would deduplicate a repeated charge.
 */
export type ChargeOutcome =
  | { status: 'approved'; chargeId: string }
  | { status: 'declined'; reason: string; retryable: boolean };

export interface ChargeRequest {
  /** The same key for every attempt at one payment. */
  idempotencyKey: string;
  card: string;
  amountCents: number;
  /** Simulated network delay, at most (ms). */
  latencyMaxMs?: number;
}

const attemptsByKey = new Map<string, number>();
let chargeCount = 0;

export async function charge(request: ChargeRequest): Promise<ChargeOutcome> {
  const latencyMaxMs = request.latencyMaxMs ?? 80;
  await new Promise((resolve) => setTimeout(resolve, Math.random() * latencyMaxMs));
  const attempt = (attemptsByKey.get(request.idempotencyKey) ?? 0) + 1;
  attemptsByKey.set(request.idempotencyKey, attempt);
  const card = request.card.replace(/\s+/g, '');
  if (card.endsWith('0002')) return { status: 'declined', reason: 'card_declined', retryable: false };
  if (card.endsWith('0119')) return { status: 'declined', reason: 'processing_error', retryable: true };
  if (card.endsWith('9995') && attempt <= 2) return { status: 'declined', reason: 'insufficient_funds', retryable: true };
  if (!Number.isInteger(request.amountCents) || request.amountCents <= 0) return { status: 'declined', reason: 'invalid_amount', retryable: false };
  return { status: 'approved', chargeId: `ch_${(++chargeCount).toString(36)}_${request.idempotencyKey}` };
}
