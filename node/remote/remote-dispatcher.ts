/**
 * Remote functions as a shard calls them (StateFun's request-reply protocol over HTTP).
 *
 * Per address one request in flight; the messages that arrive meanwhile wait and go as the next batch
 * (at most the endpoint's maxNumBatchRequests, and split below its payload limit). An answer is checked
 * whole (remote-function.ts) and applied in one step: state mutations, then messages, delayed messages,
 * cancellations and egress. A missing-state answer registers the specs and sends the same batch again.
 * A batch whose handler threw is retried one message per request, so only the message that throws
 * becomes a dead letter. An endpoint that is down or overloaded past its call budget (remote-client.ts
 * retries within it) loses nothing: the batch is sent again one message at a time (a StateFun SDK
 * answers 500 when a handler throws, so one message may be the cause), and a message that still fails
 * waits at the head of its address, in order, and is sent again with back-off (1 s, doubling to 30 s)
 * until the endpoint answers, or `attemptsMax` calls (0: no limit) have failed: then it is a dead letter.
 * While an endpoint is in an outage one request at a time goes to it (a circuit breaker, half open):
 * the other addresses wait for that request's outcome, and all go as soon as one succeeds. The
 * outage is logged when it begins and when it ends.
 *
 * Waiting messages and requests in flight are counted apart from the shard's backlog: a slow endpoint
 * backs up its own addresses, not the node's clients.
 */
import { RemoteFunctionError } from '../../lib/errors.js';
import { checkDelayedPending } from '../shard/delayed-limit.js';
import type { Message } from '../../lib/message.js';
import { AddressQueue, peekWaiting, takeWaiting } from '../shard/address-queue.js';
import type { ShardContext } from '../shard/shard-context.js';
import { callEndpoint, type AttemptError } from './remote-client.js';
import type { EndpointTable } from './remote-endpoints.js';
import { RemoteFunction } from './remote-function.js';
import { RemoteStateLayout } from './remote-state.js';

/** Missing-state rounds one batch may take (a function asking again for what it was given is broken). */
const NEGOTIATION_ROUNDS_MAX = 4;
/** Back-off before a message held by an outage is sent again: first, and at most. */
const OUTAGE_RETRY_FIRST_MS = 1000;
const OUTAGE_RETRY_MAX_MS = 30_000;

export class RemoteDispatcher {
  /** Remote function types seen so far (created on first use from the endpoint table). */
  private readonly remotes = new Map<string, RemoteFunction>();
  /** Messages waiting for a request in flight. */
  waiting = 0;
  /** Requests in flight (one per busy address). */
  inFlight = 0;

  constructor(
    private readonly context: ShardContext,
    private readonly endpoints: EndpointTable,
    /** Messages one address may have waiting before more are dead-lettered. */
    private readonly backlogMax: number,
    /** Failed calls of one message, for an outage, before it is a dead letter (0: no limit). */
    private readonly attemptsMax = 0,
  ) {}

  /** Endpoints (by URL) in an outage, and since when: logged when it begins and ends. */
  private readonly outages = new Map<string, number>();
  /** Requests in flight per endpoint URL. */
  private readonly callsTo = new Map<string, number>();
  /** Addresses waiting for an endpoint in an outage to answer a request again: woken when one does. */
  private readonly waiters = new Map<string, Map<AddressQueue, () => void>>();

  /** The remote function serving `typename`, created (and its state type added) when the endpoint table first resolves it. */
  resolve(typename: string): RemoteFunction | undefined {
    let remote = this.remotes.get(typename);
    if (remote !== undefined) return remote;
    const endpoint = this.endpoints.resolve(typename);
    if (endpoint === null) return undefined;
    const layout = new RemoteStateLayout();
    remote = new RemoteFunction(this.context.groups.addType(typename, layout), typename, endpoint, layout);
    this.remotes.set(typename, remote);
    return remote;
  }

  /** Sends or queues a message for a remote type; false when no endpoint serves its type. */
  deliver(message: Message): boolean {
    const remote = this.resolve(message.targetTypename);
    if (remote === undefined) return false;
    const queue = remote.busy.get(message.targetId);
    if (queue === undefined) {
      const fresh = new AddressQueue();
      remote.busy.set(message.targetId, fresh);
      this.startBatch(remote, fresh, [message]);
      return true;
    }
    if (queue.length >= this.backlogMax) {
      this.context.deadLetter(
        message,
        new RemoteFunctionError(
          'SC_ERR_REMOTE_BACKLOG_FULL',
          `${message.targetTypename}/${message.targetId} has ${queue.length} messages waiting for ${remote.endpoint.url}: the endpoint is slower than this address's load; scale it out, or raise --remote-backlog-max`,
        ),
      );
      return true;
    }
    queue.push(message);
    this.waiting++;
    return true;
  }

  /** Snapshot: what a restore must send again for the key groups `wanted` selects (batches in flight included). */
  peekWaiting(keyGroupOf: (id: string) => number, wanted: (keyGroup: number) => boolean, into: (keyGroup: number, message: Message) => void): void {
    peekWaiting(this.remotes.values(), keyGroupOf, wanted, into);
  }

  /** Hand-over: takes what waits for the addresses of `wanted` (no request is in flight there any more). */
  takeWaiting(keyGroupOf: (id: string) => number, wanted: ReadonlySet<number>, into: (keyGroup: number, message: Message) => void): void {
    this.waiting -= takeWaiting(this.remotes.values(), keyGroupOf, wanted, into);
  }

  /** A recovery: every busy address is forgotten; answers still on their way apply to nothing. */
  reset(): void {
    this.callsTo.clear();
    this.waiters.clear();
    for (const remote of this.remotes.values()) {
      for (const queue of remote.busy.values()) queue.abandon();
      remote.busy.clear();
    }
    this.waiting = 0;
    this.inFlight = 0;
  }

  private startBatch(remote: RemoteFunction, queue: AddressQueue, batch: Message[]): void {
    const url = remote.endpoint.url;
    const calls = this.callsTo.get(url) ?? 0;
    if (calls > 0 && this.outages.has(url)) {
      // The endpoint is down and a request is finding out whether it is back: wait for its outcome.
      queue.unshiftAll(batch);
      queue.singles += batch.length;
      this.waiting += batch.length;
      queue.attempts = Math.max(queue.attempts, 1);
      this.awaitEndpoint(remote, queue, batch[0]!.targetId);
      return;
    }
    this.callsTo.set(url, calls + 1);
    const token = {};
    queue.batch = batch;
    queue.request = token;
    this.inFlight++;
    this.context.startRun(batch[0]!.keyGroup);
    void this.call(remote, queue, token, batch);
  }

  /** Sends a batch (again after a missing-state answer) and applies the answer; never throws. */
  private async call(remote: RemoteFunction, queue: AddressQueue, token: object, batch: Message[]): Promise<void> {
    const context = this.context;
    const records = context.groups.records;
    const first = batch[0]!;
    const keyGroup = first.keyGroup;
    const id = first.targetId;
    let failure: unknown = null;
    try {
      for (let round = 1; ; round++) {
        const sent = remote.layout.registered;
        const body = remote.encodeRequest(id, records.get(keyGroup, remote.index, id), batch, Date.now());
        const payloadMax = remote.endpoint.spec.payloadMaxBytes;
        if (body.length > payloadMax) {
          if (batch.length > 1) {
            // Too large for the endpoint in one request: the second half waits for the next batch.
            const rest = batch.splice(Math.ceil(batch.length / 2));
            queue.unshiftAll(rest);
            this.waiting += rest.length;
            round--;
            continue;
          }
          throw new RemoteFunctionError(
            'SC_ERR_REMOTE_CALL',
            `a request for ${remote.typename}/${id} with this message would have ${body.length} bytes, over the endpoint's payload limit of ${payloadMax} (payload_max_bytes); raise the limit or send smaller values`,
          );
        }
        const { body: answer } = await callEndpoint(remote.endpoint, body, () => context.counters.remoteRequests++);
        if (queue.request !== token) return; // a recovery dropped this batch meanwhile
        const outcome = remote.interpret(answer, context.limits, batch.length);
        if (outcome.kind === 'result') {
          checkDelayedPending(context.groups.timers, outcome.effects, remote.typename, id, context.delayedPendingMax);
          context.refreshNow();
          const record = records.get(keyGroup, remote.index, id);
          const next = remote.layout.apply(record, outcome.mutations, context.nowMs);
          if (next !== record) records.set(keyGroup, remote.index, id, next);
          context.groups.changed[keyGroup] = 1;
          context.counters.invocations += batch.length;
          context.applyEffects(outcome.effects, remote.typename, id, keyGroup);
          break;
        }
        // Another address's answer may have registered these meanwhile: only asking again for what this
        // very request carried means the function is broken.
        const changed = remote.layout.register(outcome.missing);
        const askedForSent = outcome.missing.every((spec) => sent.some((known) => known.name === spec.name && known.typename === spec.typename && known.expireMode === spec.expireMode && known.expireAfterMs === spec.expireAfterMs));
        if ((!changed && askedForSent) || round >= NEGOTIATION_ROUNDS_MAX) {
          throw new RemoteFunctionError(
            'SC_ERR_REMOTE_RESPONSE',
            `${remote.endpoint.url} asked again for state it was given (${outcome.missing.map((spec) => spec.name).join(', ')}) after ${round} rounds; check that the function's value specs do not change between requests`,
          );
        }
      }
    } catch (error) {
      if (queue.request !== token) return;
      failure = error;
    }
    this.finish(remote, queue, batch, failure);
  }

  /** Ends a batch: dead letters if it failed, then the next batch of what waits, or the address goes idle. */
  private finish(remote: RemoteFunction, queue: AddressQueue, batch: Message[], failure: unknown): void {
    const context = this.context;
    queue.batch = null;
    queue.request = null;
    this.inFlight--;
    const url = remote.endpoint.url;
    this.callsTo.set(url, (this.callsTo.get(url) ?? 1) - 1);
    context.refreshNow();
    const first = batch[0]!;
    let held = false;
    if (failure !== null) {
      const attempt = failure as AttemptError;
      const outage = attempt.outage === true;
      if (outage) this.outageGoesOn(remote, attempt.message);
      if ((attempt.code === 'SC_ERR_REMOTE_HANDLER' || attempt.code === 'SC_ERR_LIMIT_REACHED' || outage) && batch.length > 1) {
        // A handler threw somewhere in the batch, the batch went over a limit, or the endpoint failed
        // for as long as a call may take (a StateFun SDK answers 500 for a handler that throws): send
        // its messages one by one, so only the one that fails is held or becomes a dead letter.
        queue.unshiftAll(batch);
        queue.singles += batch.length;
        this.waiting += batch.length;
      } else if (outage && (this.attemptsMax === 0 || queue.attempts + 1 < this.attemptsMax)) {
        // The endpoint is down: the message waits at the head of its address and is sent again later.
        queue.attempts++;
        queue.unshiftAll(batch);
        queue.singles += 1;
        this.waiting += 1;
        held = true;
      } else {
        const exhausted = outage ? new RemoteFunctionError('SC_ERR_REMOTE_CALL', `${attempt.message}; calls of this message that failed: ${queue.attempts + 1} (--remote-attempts-max ${this.attemptsMax})`) : failure;
        queue.attempts = 0;
        context.counters.failures += batch.length;
        for (const message of batch) context.deadLetter(message, exhausted);
      }
    } else {
      queue.attempts = 0;
      this.outageEnded(remote);
    }
    const fate = context.endRun(first.keyGroup);
    if (fate === 'releasing') return; // what waits goes with the release
    if (fate === 'gone') {
      while (queue.length > 0) {
        context.forward(queue.shift());
        this.waiting--;
      }
      queue.singles = 0;
      queue.attempts = 0;
      remote.busy.delete(first.targetId);
      return;
    }
    if (held) {
      this.retryLater(remote, queue, first.targetId);
      context.scheduleFlush();
      return;
    }
    if (queue.length > 0) {
      const size = queue.singles > 0 ? 1 : remote.batchMax;
      const next = queue.take(size);
      if (queue.singles > 0) queue.singles--;
      this.waiting -= next.length;
      this.startBatch(remote, queue, next);
    } else {
      queue.singles = 0;
      remote.busy.delete(first.targetId);
    }
    context.scheduleFlush();
  }

  /** Sends the held message at the head of `id`'s queue again after a back-off. */
  private retryLater(remote: RemoteFunction, queue: AddressQueue, id: string): void {
    const delayMs = Math.min(OUTAGE_RETRY_MAX_MS, OUTAGE_RETRY_FIRST_MS * 2 ** Math.min(queue.attempts - 1, 10)) * (0.75 + Math.random() / 2);
    queue.retry = setTimeout(() => {
      queue.retry = null;
      this.waiters.get(remote.endpoint.url)?.delete(queue);
      this.sendHeld(remote, queue, id);
    }, delayMs);
    queue.retry.unref();
  }

  /** Sends the message held at the head of `id`'s queue, unless the address moved, was reset or is busy meanwhile. */
  private sendHeld(remote: RemoteFunction, queue: AddressQueue, id: string): void {
    if (remote.busy.get(id) !== queue || queue.length === 0 || queue.request !== null) return;
    const next = queue.take(1);
    if (queue.singles > 0) queue.singles--;
    this.waiting -= next.length;
    this.startBatch(remote, queue, next);
    this.context.scheduleFlush();
  }

  private outageGoesOn(remote: RemoteFunction, reason: string): void {
    const url = remote.endpoint.url;
    if (this.outages.has(url)) return;
    this.outages.set(url, Date.now());
    this.context.log(`remote: ${url} fails (${reason}): its messages wait, in order, and are sent again until it answers${this.attemptsMax === 0 ? '' : ` (at most ${this.attemptsMax} calls each)`}`);
  }

  private outageEnded(remote: RemoteFunction): void {
    const url = remote.endpoint.url;
    const since = this.outages.get(url);
    if (since === undefined) return;
    this.outages.delete(url);
    this.context.log(`remote: ${url} answers again, after ${Math.round((Date.now() - since) / 1000)} s`);
    const waiting = this.waiters.get(url);
    this.waiters.delete(url);
    for (const wake of waiting?.values() ?? []) wake();
  }

  /**
   * Holds an address until its endpoint answers again: woken by the request that succeeds, or by its
   * own back-off timer (then it may be the next request that finds out).
   */
  private awaitEndpoint(remote: RemoteFunction, queue: AddressQueue, id: string): void {
    const url = remote.endpoint.url;
    let waiting = this.waiters.get(url);
    if (waiting === undefined) this.waiters.set(url, (waiting = new Map()));
    waiting.set(queue, () => {
      if (queue.retry !== null) clearTimeout(queue.retry);
      queue.retry = null;
      this.sendHeld(remote, queue, id);
    });
    if (queue.retry === null) this.retryLater(remote, queue, id);
  }
}
