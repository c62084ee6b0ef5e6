/**
 * The Transport contract (gossip/transport.ts) as an executable suite. Every implementation —
 * the libp2p transport and the simulated network — runs it through a TransportHarness:
 *
 *     transportConformance('libp2p', () => makeLibp2pHarness());
 *
 * `harness.create(n)` must return transports that are built but NOT started: the suite calls
 * `start(handlers)` on each itself (handlers record traffic and detect re-entrant calls).
 * `harness.connect(a, b)` must leave both ends able to use the link at once.
 *
 * The suite never waits on its own clock: all waiting goes through `harness.settle(ms)`, so a
 * virtual-time harness runs it as fast as its event queue drains. Waits are "poll until, with a
 * budget" rather than fixed sleeps, so a slow machine makes the suite slower, not flaky.
 * Budgets are generous: they exist to fail a hanging test, not to measure speed.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  MAX_MESSAGE_BYTES,
  type PeerId,
  type Transport,
  TransportError,
  type TransportErrorCode,
  type TransportHandlers,
} from '../../gossip/transport.ts';
import type { TransportHarness } from './harness.ts';

/** How long (harness time) a test may wait for something that should happen. */
const BUDGET_MS = 15_000;
/** Poll step: small enough to be quick on real networks, big enough not to spin. */
const STEP_MS = 10;
/** Quiet period used to conclude that something did NOT happen. */
const QUIET_MS = 300;

interface Received {
  from: PeerId;
  data: Uint8Array;
}

interface TopicReceived extends Received {
  topic: string;
}

type RequestHandler = (from: PeerId, data: Uint8Array) => Uint8Array | Promise<Uint8Array>;

/**
 * Detects re-entrant handler calls: every call the suite makes into a transport goes through
 * `call`, and a handler that runs while `depth > 0` was invoked synchronously from inside it.
 */
class ReentrancyGuard {
  depth = 0;
  readonly violations: string[] = [];

  call<T>(fn: () => T): T {
    this.depth++;
    try {
      return fn();
    } finally {
      this.depth--;
    }
  }

  check(where: string): void {
    if (this.depth > 0) this.violations.push(where);
  }
}

/** A started transport plus everything its handlers saw. */
class Node {
  readonly messages: Received[] = [];
  readonly topics: TopicReceived[] = [];
  readonly requests: Received[] = [];
  /** Answers requests; tests replace it. Default: echo. */
  answer: RequestHandler = (_from, data) => data;
  /** Extra behaviour on a direct message (after it is recorded). */
  onMessage: ((from: PeerId, data: Uint8Array) => void) | undefined;

  constructor(
    readonly transport: Transport,
    private readonly guard: ReentrancyGuard,
  ) {}

  get id(): PeerId {
    return this.transport.id;
  }

  handlers(): TransportHandlers {
    return {
      onMessage: (from, data) => {
        this.guard.check(`onMessage at ${this.id}`);
        this.messages.push({ from, data });
        this.onMessage?.(from, data);
      },
      onTopic: (topic, from, data) => {
        this.guard.check(`onTopic at ${this.id}`);
        this.topics.push({ topic, from, data });
      },
      onRequest: (from, data) => {
        this.guard.check(`onRequest at ${this.id}`);
        this.requests.push({ from, data });
        return this.answer(from, data);
      },
    };
  }

  send(to: PeerId, data: Uint8Array): void {
    this.guard.call(() => this.transport.send(to, data));
  }

  publish(topic: string, data: Uint8Array): void {
    this.guard.call(() => this.transport.publish(topic, data));
  }

  subscribe(topic: string): void {
    this.guard.call(() => this.transport.subscribe(topic));
  }

  request(to: PeerId, data: Uint8Array, timeoutMs = 5_000): Promise<Uint8Array> {
    return this.guard.call(() => this.transport.request(to, data, timeoutMs));
  }

  messagesFrom(from: Node): Received[] {
    return this.messages.filter((m) => m.from === from.id);
  }

  topicMessages(topic: string, data?: Uint8Array): TopicReceived[] {
    return this.topics.filter((m) => m.topic === topic && (data === undefined || sameBytes(m.data, data)));
  }
}

type Outcome<T> =
  | { state: 'pending' }
  | { state: 'resolved'; value: T }
  | { state: 'rejected'; error: unknown };

/** Observe a promise without awaiting it (and without leaving a rejection unhandled). */
function track<T>(promise: Promise<T>): { readonly current: Outcome<T> } {
  const box: { current: Outcome<T> } = { current: { state: 'pending' } };
  promise.then(
    (value) => {
      box.current = { state: 'resolved', value };
    },
    (error: unknown) => {
      box.current = { state: 'rejected', error };
    },
  );
  return box;
}

/** Deterministic bytes (no Math.random): distinct per seed, not all-zero. */
function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = (seed * 2_654_435_761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    // xorshift32
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

function text(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

function reversed(data: Uint8Array): Uint8Array {
  return Uint8Array.from(data).reverse();
}

export function transportConformance(name: string, makeHarness: () => TransportHarness): void {
  describe(`Transport conformance: ${name}`, () => {
    let harness: TransportHarness;
    let guard: ReentrancyGuard;

    beforeEach(() => {
      harness = makeHarness();
      guard = new ReentrancyGuard();
    });

    afterEach(async () => {
      await harness.cleanup();
      expect(guard.violations, 'handlers called re-entrantly from inside a transport call').toEqual([]);
    });

    /** Create and start `n` transports (unconnected). */
    async function nodes(n: number): Promise<Node[]> {
      const transports = await harness.create(n);
      const out = transports.map((t) => new Node(t, guard));
      for (const node of out) await node.transport.start(node.handlers());
      return out;
    }

    async function connectAll(list: Node[]): Promise<void> {
      for (let i = 0; i < list.length; i++) {
        for (let j = i + 1; j < list.length; j++)
          await harness.connect(list[i]!.transport, list[j]!.transport);
      }
    }

    async function until(what: string, condition: () => boolean, budgetMs = BUDGET_MS): Promise<void> {
      for (let waited = 0; !condition(); waited += STEP_MS) {
        if (waited >= budgetMs) throw new Error(`gave up after ${budgetMs} ms waiting for ${what}`);
        await harness.settle(STEP_MS);
      }
    }

    /** Wait for a promise to settle (in harness time) and return its outcome. */
    async function settled<T>(promise: Promise<T>, budgetMs = BUDGET_MS): Promise<Outcome<T>> {
      const box = track(promise);
      await until('a request to settle', () => box.current.state !== 'pending', budgetMs);
      return box.current;
    }

    async function expectResolves<T>(promise: Promise<T>, budgetMs = BUDGET_MS): Promise<T> {
      const outcome = await settled(promise, budgetMs);
      if (outcome.state !== 'resolved') {
        throw new Error(
          `expected success, got ${outcome.state === 'rejected' ? String(outcome.error) : 'nothing'}`,
        );
      }
      return outcome.value;
    }

    async function expectTransportError(
      promise: Promise<unknown>,
      codes: TransportErrorCode[],
      budgetMs = BUDGET_MS,
    ): Promise<TransportError> {
      const outcome = await settled(promise, budgetMs);
      expect(outcome.state).toBe('rejected');
      const error = outcome.state === 'rejected' ? outcome.error : undefined;
      expect(error).toBeInstanceOf(TransportError);
      const te = error as TransportError;
      expect(codes, `error code of: ${te.message}`).toContain(te.code);
      return te;
    }

    /**
     * Publish probes until every subscriber has seen one: subscriptions take a moment to
     * propagate (gossipsub exchanges them on connect), and the contract allows loss meanwhile.
     */
    async function warmUp(publisher: Node, topic: string, subscribers: Node[]): Promise<void> {
      const probe = text(`probe:${topic}`);
      let round = 0;
      await until(`subscribers of ${topic} to see a probe`, () => {
        if (round++ % 5 === 0) publisher.publish(topic, probe);
        return subscribers.every((s) => s.topicMessages(topic, probe).length > 0);
      });
    }

    describe('identity and addresses', () => {
      it('gives each node a distinct id and, once started, at least one address', async () => {
        const [a, b] = await nodes(2);
        expect(a!.id).not.toBe(b!.id);
        expect(a!.transport.addrs().length).toBeGreaterThan(0);
        expect(b!.transport.addrs().length).toBeGreaterThan(0);
      });

      it('dial(addr) resolves with the id of the peer listening there', async () => {
        const [a, b] = await nodes(2);
        const addr = b!.transport.addrs()[0]!;
        expect(await expectResolves(a!.transport.dial(addr))).toBe(b!.id);
      });
    });

    describe('send', () => {
      it('delivers bytes intact with the sender as `from`', async () => {
        const [a, b] = await nodes(2);
        await connectAll([a!, b!]);
        const payloads = [new Uint8Array(0), text('hello'), pattern(64 * 1024, 1)];
        for (const p of payloads) a!.send(b!.id, p);
        await until('three messages at b', () => b!.messages.length >= payloads.length);
        await harness.settle(QUIET_MS);
        expect(b!.messages).toHaveLength(payloads.length); // never duplicated
        for (const m of b!.messages) expect(m.from).toBe(a!.id);
        for (const p of payloads) expect(b!.messages.some((m) => sameBytes(m.data, p))).toBe(true);
      });

      it('works in both directions and between several peers', async () => {
        const [a, b, c] = await nodes(3);
        await connectAll([a!, b!, c!]);
        for (const from of [a!, b!, c!]) {
          for (const to of [a!, b!, c!]) if (from !== to) from.send(to.id, text(`${from.id}->${to.id}`));
        }
        await until('every node to hear from both others', () =>
          [a!, b!, c!].every((n) => n.messages.length >= 2),
        );
        for (const to of [a!, b!, c!]) {
          for (const m of to.messages) expect(sameBytes(m.data, text(`${m.from}->${to.id}`))).toBe(true);
        }
      });

      it('does not echo a send to self', async () => {
        const [a, b] = await nodes(2);
        await connectAll([a!, b!]);
        a!.send(a!.id, text('to myself'));
        a!.send(b!.id, text('marker'));
        await until('the marker at b', () => b!.messages.length === 1);
        await harness.settle(QUIET_MS);
        expect(a!.messages).toEqual([]);
      });

      it('drops an oversize message without throwing, and keeps working', async () => {
        const [a, b] = await nodes(2);
        await connectAll([a!, b!]);
        expect(() => a!.send(b!.id, new Uint8Array(MAX_MESSAGE_BYTES + 1))).not.toThrow();
        a!.send(b!.id, text('after'));
        await until('the next message', () => b!.messages.length >= 1);
        await harness.settle(QUIET_MS);
        expect(b!.messages.map((m) => m.data.byteLength)).toEqual([5]);
      });

      it('never throws for an unknown, bogus or stopped peer', async () => {
        const [a, b, ghost] = await nodes(3);
        await connectAll([a!, b!]);
        await b!.transport.stop();
        // Best effort: whether these arrive anywhere is unspecified; they must not throw.
        expect(() => a!.send(ghost!.id, text('nobody told me about you'))).not.toThrow();
        expect(() => a!.send('not-a-peer-id', text('x'))).not.toThrow();
        expect(() => a!.send(b!.id, text('you are gone'))).not.toThrow();
        await harness.settle(QUIET_MS);
        expect(b!.messages).toEqual([]);
      });
    });

    describe('handlers', () => {
      it('are never called re-entrantly: a message sent from a handler arrives later', async () => {
        const [a, b] = await nodes(2);
        await connectAll([a!, b!]);
        const order: string[] = [];
        b!.onMessage = (from, data) => {
          order.push(`b got ${new TextDecoder().decode(data)}`);
          b!.send(from, text('pong'));
          order.push('b handler done');
        };
        a!.onMessage = () => order.push('a got pong');
        a!.send(b!.id, text('ping'));
        order.push('a sent ping');
        await until('the pong', () => a!.messages.length === 1);
        expect(order).toEqual(['a sent ping', 'b got ping', 'b handler done', 'a got pong']);
        // The guard (checked after each test) also verifies no handler ran inside a call.
      });

      it('a request handler may itself send and request', async () => {
        const [a, b, c] = await nodes(3);
        await connectAll([a!, b!, c!]);
        c!.answer = (_from, data) => reversed(data);
        b!.answer = async (from, data) => {
          b!.send(from, text('side note'));
          return b!.request(c!.id, data);
        };
        const answer = await expectResolves(a!.request(b!.id, text('abc')));
        expect(new TextDecoder().decode(answer)).toBe('cba');
        await until('the side note', () => a!.messages.length === 1);
      });
    });

    describe('publish / subscribe', () => {
      it('reaches every subscriber once, and no non-subscriber', async () => {
        const [pub, s1, s2, other, idle] = await nodes(5);
        const all = [pub!, s1!, s2!, other!, idle!];
        await connectAll(all);
        pub!.subscribe('news'); // subscribed publishers must not hear themselves either
        s1!.subscribe('news');
        s2!.subscribe('news');
        other!.subscribe('sports');
        await warmUp(pub!, 'news', [s1!, s2!]);

        const payload = pattern(10_000, 7);
        pub!.publish('news', payload);
        await until('the payload at both subscribers', () =>
          [s1!, s2!].every((s) => s.topicMessages('news', payload).length > 0),
        );
        await harness.settle(QUIET_MS);
        const ids = new Set(all.map((n) => n.id));
        for (const s of [s1!, s2!]) {
          const got = s.topicMessages('news', payload);
          expect(got).toHaveLength(1);
          expect(ids.has(got[0]!.from)).toBe(true);
          expect(got[0]!.from).not.toBe(s.id);
        }
        expect(pub!.topics, 'publisher heard its own message').toEqual([]);
        expect(other!.topics).toEqual([]);
        expect(idle!.topics).toEqual([]);
      });

      it('delivers identical payloads published twice as two messages', async () => {
        const [pub, sub] = await nodes(2);
        await connectAll([pub!, sub!]);
        sub!.subscribe('t');
        await warmUp(pub!, 't', [sub!]);
        const same = text('same bytes');
        pub!.publish('t', same);
        await until('the first copy', () => sub!.topicMessages('t', same).length >= 1);
        pub!.publish('t', same);
        await until('the second copy', () => sub!.topicMessages('t', same).length >= 2);
      });

      it('carries empty and large payloads', async () => {
        const [pub, sub] = await nodes(2);
        await connectAll([pub!, sub!]);
        sub!.subscribe('blobs');
        await warmUp(pub!, 'blobs', [sub!]);
        const empty = new Uint8Array(0);
        const big = pattern(1024 * 1024, 3);
        pub!.publish('blobs', empty);
        pub!.publish('blobs', big);
        await until('both payloads', () => sub!.topicMessages('blobs', big).length === 1);
        await until('the empty payload', () => sub!.topicMessages('blobs', empty).length === 1);
      });

      it('never throws: no subscribers, oversize payload', async () => {
        const [a] = await nodes(1);
        expect(() => a!.publish('nobody-listens', text('x'))).not.toThrow();
        expect(() => a!.publish('nobody-listens', new Uint8Array(MAX_MESSAGE_BYTES + 1))).not.toThrow();
        await harness.settle(QUIET_MS);
      });

      it('reaches a peer that subscribes after the publisher connected', async () => {
        const [pub, late] = await nodes(2);
        await connectAll([pub!, late!]);
        await harness.settle(QUIET_MS);
        late!.subscribe('late');
        await warmUp(pub!, 'late', [late!]);
      });
    });

    describe('request', () => {
      it('round-trips bytes intact, with the requester as `from`', async () => {
        const [a, b] = await nodes(2);
        await connectAll([a!, b!]);
        b!.answer = (_from, data) => reversed(data);
        for (const payload of [new Uint8Array(0), text('x'), pattern(1024 * 1024 + 3, 5)]) {
          const answer = await expectResolves(a!.request(b!.id, payload));
          expect(sameBytes(answer, reversed(payload))).toBe(true);
        }
        expect(b!.requests.every((r) => r.from === a!.id)).toBe(true);
      });

      it('accepts an asynchronous handler', async () => {
        const [a, b] = await nodes(2);
        await connectAll([a!, b!]);
        b!.answer = async (from) => {
          await Promise.resolve();
          return text(`hello ${from}`);
        };
        const answer = await expectResolves(a!.request(b!.id, text('hi')));
        expect(new TextDecoder().decode(answer)).toBe(`hello ${a!.id}`);
      });

      it('carries exactly MAX_MESSAGE_BYTES both ways', async () => {
        const [a, b] = await nodes(2);
        await connectAll([a!, b!]);
        const max = pattern(MAX_MESSAGE_BYTES, 9);
        b!.answer = (_from, data) => data;
        const answer = await expectResolves(a!.request(b!.id, max, 10_000));
        expect(sameBytes(answer, max)).toBe(true);
      });

      it('correlates many concurrent requests', async () => {
        const [a, b] = await nodes(2);
        await connectAll([a!, b!]);
        b!.answer = (_from, data) => reversed(data);
        const payloads = Array.from({ length: 50 }, (_, i) => text(`request number ${i}`));
        const answers = await expectResolves(Promise.all(payloads.map((p) => a!.request(b!.id, p, 10_000))));
        for (const [i, answer] of answers.entries())
          expect(sameBytes(answer, reversed(payloads[i]!))).toBe(true);
      });

      it("rejects with 'remote' and the handler's message when the handler throws", async () => {
        const [a, b] = await nodes(2);
        await connectAll([a!, b!]);
        b!.answer = (_from, data) => {
          if (data[0] === 1) throw new Error('bid refused: host full');
          return Promise.reject(new Error('async refusal'));
        };
        const sync = await expectTransportError(a!.request(b!.id, Uint8Array.of(1)), ['remote']);
        expect(sync.message).toContain('bid refused: host full');
        expect(sync.peer).toBe(b!.id);
        const async = await expectTransportError(a!.request(b!.id, Uint8Array.of(2)), ['remote']);
        expect(async.message).toContain('async refusal');
        // The responder keeps serving after its handler threw.
        b!.answer = () => text('fine');
        expect(await expectResolves(a!.request(b!.id, text('?')))).toEqual(text('fine'));
      });

      it("rejects with 'timeout' when no answer comes in time, without hanging", async () => {
        const [a, b] = await nodes(2);
        await connectAll([a!, b!]);
        let release: ((v: Uint8Array) => void) | undefined;
        b!.answer = () =>
          new Promise<Uint8Array>((resolve) => {
            release = resolve;
          });
        const pending = track(a!.request(b!.id, text('slow'), 1_000));
        await harness.settle(100);
        expect(pending.current.state, 'a 1 s request settled after 100 ms').toBe('pending');
        await until('the timeout', () => pending.current.state !== 'pending', 1_000 + BUDGET_MS);
        const outcome = pending.current;
        expect(
          outcome.state === 'rejected' && outcome.error instanceof TransportError && outcome.error.code,
        ).toBe('timeout');
        release?.(text('too late')); // a late answer must be ignored quietly
        await harness.settle(QUIET_MS);
      });

      it("rejects oversize requests and oversize answers with 'too-large'", async () => {
        const [a, b] = await nodes(2);
        await connectAll([a!, b!]);
        await expectTransportError(a!.request(b!.id, new Uint8Array(MAX_MESSAGE_BYTES + 1)), ['too-large']);
        expect(b!.requests).toEqual([]);
        b!.answer = () => new Uint8Array(MAX_MESSAGE_BYTES + 1);
        await expectTransportError(a!.request(b!.id, text('give me too much'), 10_000), ['too-large']);
      });

      it('rejects for an unknown peer, a bogus id, and a stopped peer', async () => {
        const [a, b, never] = await nodes(3);
        await connectAll([a!, b!]);
        // `never` is running but nobody was told how to reach it.
        await expectTransportError(a!.request(never!.id, text('?'), 2_000), ['unreachable', 'timeout']);
        await expectTransportError(a!.request('not-a-peer-id', text('?'), 2_000), ['unreachable', 'timeout']);
        await b!.transport.stop();
        await expectTransportError(a!.request(b!.id, text('?'), 2_000), ['unreachable', 'timeout']);
      });
    });

    describe('stop', () => {
      it("rejects pending requests with 'stopped'; later calls are dropped or rejected", async () => {
        const [a, b] = await nodes(2);
        await connectAll([a!, b!]);
        b!.answer = () => new Promise<Uint8Array>(() => {}); // never answers
        const pending = track(a!.request(b!.id, text('wait'), 30_000));
        await until('b to receive the request', () => b!.requests.length === 1);
        await a!.transport.stop();
        await until('the pending request to settle', () => pending.current.state !== 'pending', 1_000);
        const outcome = pending.current;
        expect(
          outcome.state === 'rejected' && outcome.error instanceof TransportError && outcome.error.code,
        ).toBe('stopped');

        expect(() => a!.send(b!.id, text('after stop'))).not.toThrow();
        expect(() => a!.publish('t', text('after stop'))).not.toThrow();
        await expectTransportError(a!.request(b!.id, text('after stop')), ['stopped']);
        await a!.transport.stop(); // idempotent
        b!.send(a!.id, text('to a stopped node'));
        await harness.settle(QUIET_MS);
        expect(b!.messages).toEqual([]);
        expect(a!.messages).toEqual([]);
      });
    });

    describe('addPeer', () => {
      it('lets a node reach a peer it was never connected to', async () => {
        const [a, b, c] = await nodes(3);
        await harness.connect(a!.transport, b!.transport);
        await harness.connect(b!.transport, c!.transport);
        // A learns C's addresses the way membership gossip carries them (C's own record via B).
        a!.transport.addPeer(c!.id, c!.transport.addrs());
        a!.send(c!.id, text('hello c'));
        await until('the message at c', () => c!.messagesFrom(a!).length === 1);
        c!.answer = () => text('hello a');
        expect(await expectResolves(a!.request(c!.id, text('?')))).toEqual(text('hello a'));
        // ...and C can answer back over the same path.
        c!.send(a!.id, text('back'));
        await until('the reply at a', () => a!.messagesFrom(c!).length === 1);
      });

      it('ignores garbage without throwing', async () => {
        const [a] = await nodes(1);
        expect(() => a!.transport.addPeer('not-a-peer-id', ['not an address'])).not.toThrow();
        expect(() => a!.transport.addPeer(a!.id, a!.transport.addrs())).not.toThrow();
      });
    });
  });
}
