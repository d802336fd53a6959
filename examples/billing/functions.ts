/**
 * Subscription billing, the example from StateFun's seed talk.
 *
 * billing/subscription (id: the user id) keeps the user's plan, card, status and billing interval. When a
 * user subscribes it schedules a `bill` message to itself for the next billing date with `sendAfter`
 * (seconds here, months in life). Each `bill` asks a payment instance to charge the period and schedules
 * the next one.
 *
 * billing/payment (id: `<user>/<period>`) charges one billing period through the (simulated) card
 * processor and keeps the payment's status: pending → paid, or retrying (a soft decline, retried with
 * exponential back-off by delayed messages to itself) → paid or failed. It reports the outcome to the
 * subscription, which marks the user past due on failure.
 *
 * Every change is emitted to the `billing` egress. Run it:
 *
 *   npm start                          # a node with these functions (and the greeter)
 *   node examples/billing/demo.js      # subscribes four users and prints the billing egress
 */
import { defineFunction, Types, type Address, type Context } from 'statecraft';
import { charge } from './card-processor.js';

export const BILLING_EGRESS = 'billing';

/** Commands a client (or another function) sends to billing/subscription. */
export type SubscriptionCommand =
  | {
      action: 'subscribe';
      plan: string;
      amountCents: number;
      card: string;
      /** Billing interval in seconds. */
      intervalSeconds: number;
      /** Retry policy for soft declines; defaults: first retry after 2 s, 4 attempts in all. */
      retryBaseMs?: number;
      attemptsMax?: number;
    }
  | { action: 'update-card'; card: string }
  | { action: 'cancel' }
  | { action: 'bill'; period: number }
  | { action: 'payment-result'; period: number; paid: boolean; reason?: string };

export interface Subscription {
  plan: string;
  amountCents: number;
  card: string;
  intervalSeconds: number;
  retryBaseMs: number;
  attemptsMax: number;
  status: 'active' | 'past-due' | 'cancelled';
  /** The last period billed (0 before the first). */
  period: number;
  nextBillingAt: number | null;
}

/** A request from a subscription to a payment instance. */
export type PaymentCommand =
  | { action: 'charge'; user: string; period: number; amountCents: number; card: string; retryBaseMs: number; attemptsMax: number }
  | { action: 'retry' };

export interface Payment {
  user: string;
  period: number;
  amountCents: number;
  card: string;
  retryBaseMs: number;
  attemptsMax: number;
  status: 'pending' | 'retrying' | 'paid' | 'failed';
  attempts: number;
  chargeId?: string;
  lastReason?: string;
}

/** What the `billing` egress carries. */
export type BillingEvent = {
  user: string;
  event: 'subscribed' | 'card-updated' | 'cancelled' | 'billing' | 'paid' | 'retrying' | 'failed' | 'past-due' | 'reactivated' | 'ignored';
  period?: number;
  amountCents?: number;
  attempt?: number;
  retryInMs?: number;
  reason?: string;
  chargeId?: string;
  status?: Subscription['status'];
};

export const SubscriptionCommandType = Types.json<SubscriptionCommand>('billing/subscription-command');
export const PaymentCommandType = Types.json<PaymentCommand>('billing/payment-command');
export const BillingEventType = Types.json<BillingEvent>('billing/event');
const SubscriptionType = Types.json<Subscription>('billing/subscription-state');
const PaymentType = Types.json<Payment>('billing/payment-state');

const BILL_TOKEN = 'next-bill';

function emit(context: Context<unknown>, event: BillingEvent): void {
  context.egress(BILLING_EGRESS, event, BillingEventType);
}

export const subscription = defineFunction({
  typename: 'billing/subscription',
  specs: [{ name: 'subscription', type: SubscriptionType }],
  fn(context, message) {
    const user = context.self.id;
    const command = message.as(SubscriptionCommandType);
    const current = context.storage.subscription;
    const scheduleBill = (state: Subscription) => {
      // One pending bill per subscription: replace whatever was scheduled.
      context.cancelDelayedMessage(BILL_TOKEN);
      const delayMs = state.intervalSeconds * 1000;
      state.nextBillingAt = Date.now() + delayMs;
      context.sendAfter(delayMs, context.self, { action: 'bill', period: state.period + 1 } satisfies SubscriptionCommand, {
        type: SubscriptionCommandType,
        cancellationToken: BILL_TOKEN,
      });
    };

    switch (command.action) {
      case 'subscribe': {
        if (!(command.intervalSeconds > 0) || !Number.isInteger(command.amountCents) || command.amountCents <= 0) {
          throw new RangeError(`subscribe needs intervalSeconds > 0 and a positive whole amountCents (got ${command.intervalSeconds}, ${command.amountCents})`);
        }
        const state: Subscription = {
          plan: command.plan,
          amountCents: command.amountCents,
          card: command.card,
          intervalSeconds: command.intervalSeconds,
          retryBaseMs: command.retryBaseMs ?? 2000,
          attemptsMax: command.attemptsMax ?? 4,
          status: 'active',
          period: current?.period ?? 0,
          nextBillingAt: null,
        };
        scheduleBill(state);
        context.storage.subscription = state;
        emit(context, { user, event: 'subscribed', amountCents: state.amountCents, status: state.status });
        return;
      }
      case 'update-card': {
        if (!current) return emit(context, { user, event: 'ignored', reason: 'no subscription' });
        current.card = command.card;
        context.storage.subscription = current;
        return emit(context, { user, event: 'card-updated', status: current.status });
      }
      case 'cancel': {
        if (!current) return emit(context, { user, event: 'ignored', reason: 'no subscription' });
        context.cancelDelayedMessage(BILL_TOKEN);
        current.status = 'cancelled';
        current.nextBillingAt = null;
        context.storage.subscription = current;
        return emit(context, { user, event: 'cancelled', status: current.status });
      }
      case 'bill': {
        // A bill for an old period (say, scheduled before a re-subscribe) is stale.
        if (!current || current.status === 'cancelled' || command.period !== current.period + 1) return;
        current.period = command.period;
        scheduleBill(current);
        context.storage.subscription = current;
        context.send(
          { typename: 'billing/payment', id: `${user}/${current.period}` },
          {
            action: 'charge',
            user,
            period: current.period,
            amountCents: current.amountCents,
            card: current.card,
            retryBaseMs: current.retryBaseMs,
            attemptsMax: current.attemptsMax,
          } satisfies PaymentCommand,
          PaymentCommandType,
        );
        return emit(context, { user, event: 'billing', period: current.period, amountCents: current.amountCents });
      }
      case 'payment-result': {
        if (!current) return;
        if (!command.paid && current.status === 'active') {
          current.status = 'past-due';
          context.storage.subscription = current;
          return emit(context, { user, event: 'past-due', period: command.period, reason: command.reason, status: current.status });
        }
        if (command.paid && current.status === 'past-due') {
          current.status = 'active';
          context.storage.subscription = current;
          return emit(context, { user, event: 'reactivated', period: command.period, status: current.status });
        }
        return;
      }
    }
  },
});

export const payment = defineFunction({
  typename: 'billing/payment',
  specs: [{ name: 'payment', type: PaymentType }],
  // Async: the handler awaits the card processor. Other payments go on meanwhile; this one's next
  // message waits until the charge attempt is done.
  async fn(context, message) {
    const command = message.as(PaymentCommandType);
    let state = context.storage.payment;
    if (command.action === 'charge') {
      if (state) return; // this period is already being charged (a repeated request)
      state = { ...command, status: 'pending', attempts: 0 };
      delete (state as Partial<PaymentCommand>).action;
    } else if (!state || state.status !== 'retrying') {
      return;
    }

    state.attempts++;
    const outcome = await charge({ idempotencyKey: context.self.id, card: state.card, amountCents: state.amountCents });
    const subscriptionAddress: Address = { typename: 'billing/subscription', id: state.user };
    const report = (paid: boolean, reason?: string) =>
      context.send(subscriptionAddress, { action: 'payment-result', period: state.period, paid, reason } satisfies SubscriptionCommand, SubscriptionCommandType);

    if (outcome.status === 'approved') {
      state.status = 'paid';
      state.chargeId = outcome.chargeId;
      report(true);
      emit(context, { user: state.user, event: 'paid', period: state.period, amountCents: state.amountCents, attempt: state.attempts, chargeId: outcome.chargeId });
    } else if (outcome.retryable && state.attempts < state.attemptsMax) {
      // Exponential back-off: base, 2×base, 4×base, …
      const retryInMs = state.retryBaseMs * 2 ** (state.attempts - 1);
      state.status = 'retrying';
      state.lastReason = outcome.reason;
      context.sendAfter(retryInMs, context.self, { action: 'retry' } satisfies PaymentCommand, { type: PaymentCommandType });
      emit(context, { user: state.user, event: 'retrying', period: state.period, attempt: state.attempts, reason: outcome.reason, retryInMs });
    } else {
      state.status = 'failed';
      state.lastReason = outcome.reason;
      report(false, outcome.reason);
      emit(context, { user: state.user, event: 'failed', period: state.period, attempt: state.attempts, reason: outcome.reason });
    }
    context.storage.payment = state;
  },
});
