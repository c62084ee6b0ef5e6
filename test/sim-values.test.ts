import { describe, expect, it } from 'vitest';
import type { TransportError, TransportHandlers } from '../gossip/transport.ts';
import { Prng } from '../node/core/random.ts';
import { EventLoop } from '../sim/clock.ts';
import { SimNetwork, type SimTransport, type TraceEvent } from '../sim/network.ts';

/**
 * SimTransport.sendValue / requestValue (simulator only): values instead of bytes, charged the
 * given sizes — the same events, counters, latencies and errors as the byte path.
 */

function setup() {
  const loop = new EventLoop();
  const trace: TraceEvent[] = [];
  const net = new SimNetwork(loop, new Prng('values'), {
    trace: (ev) => trace.push(ev),
    maxMessageBytes: 1000,
  });
  const got: { from: string; value: unknown }[] = [];
  const handlers = (
    answer?: (from: string, v: object) => { value: object; bytes: number },
  ): TransportHandlers => ({
    onMessage() {},
    onTopic() {},
    onRequest: () => new Uint8Array(3),
    onValue: (from, value) => void got.push({ from, value }),
    onRequestValue: answer,
  });
  return { loop, net, trace, got, handlers };
}

async function settle<T>(loop: EventLoop, p: Promise<T>): Promise<T> {
  let done = false;
  const out = p.finally(() => {
    done = true;
  });
  out.catch(() => {});
  for (let i = 0; !done && i < 1000; i++) await loop.runForAsync(10);
  return out;
}

describe('SimTransport values', () => {
  it('sendValue delivers the very object, charged `bytes`; oversize and unknown peers are dropped', async () => {
    const { loop, net, trace, got, handlers } = setup();
    const a = net.createSimTransport('a');
    const b = net.createSimTransport('b');
    await a.start(handlers());
    await b.start(handlers());
    const v = Object.freeze({ hello: 1 });
    a.sendValue('b', v, 120); // b unknown to a yet (no routeById): dropped
    await settle(loop, a.dial('sim://b'));
    a.sendValue('b', v, 120);
    a.sendValue('b', v, 5000); // > maxMessageBytes
    await loop.runForAsync(50);
    expect(got).toEqual([{ from: 'a', value: v }]);
    expect(got[0]!.value).toBe(v);
    expect(net.stats('a')).toMatchObject({ sent: 1, sentBytes: 120 });
    expect(net.stats('b')).toMatchObject({ recv: 1, recvBytes: 120 });
    expect(trace.map((e) => [e.kind, e.bytes, e.drop])).toEqual([
      ['send', 120, 'unknown'],
      ['send', 5000, 'too-large'], // drops are recorded at send, deliveries on arrival
      ['send', 120, undefined],
    ]);
  });

  it('requestValue: answers, errors and sizes as request does', async () => {
    const { loop, net, handlers } = setup();
    const a = net.createSimTransport('a');
    const b = net.createSimTransport('b');
    const c = net.createSimTransport('c');
    await a.start(handlers());
    await b.start(
      handlers((_from, v) => {
        const q = v as { n: number };
        if (q.n === 1) throw new Error('nope');
        if (q.n === 2) return { value: { big: true }, bytes: 4000 };
        return { value: { echo: q.n }, bytes: 30 };
      }),
    );
    await c.start(handlers()); // no onRequestValue
    await settle(loop, a.dial('sim://b'));
    await settle(loop, a.dial('sim://c'));
    expect(await settle(loop, a.requestValue('b', { n: 7 }, 40, 1000))).toEqual({ echo: 7 });
    expect(net.stats('a')).toMatchObject({ sent: 1, sentBytes: 40, recv: 1, recvBytes: 30 });
    const code = async (p: Promise<unknown>) =>
      settle(loop, p).then(
        () => 'ok',
        (e: TransportError) => e.code,
      );
    expect(await code(a.requestValue('b', { n: 1 }, 40, 1000))).toBe('remote');
    expect(await code(a.requestValue('b', { n: 2 }, 40, 1000))).toBe('too-large');
    expect(await code(a.requestValue('b', { n: 3 }, 4000, 1000))).toBe('too-large');
    expect(await code(a.requestValue('c', { n: 3 }, 40, 1000))).toBe('remote');
    const heal = net.partition(['a'], ['b']);
    expect(await code(a.requestValue('b', { n: 3 }, 40, 300))).toBe('timeout');
    heal();
    net.crash('b');
    expect(await code(a.requestValue('b', { n: 3 }, 40, 1000))).toBe('unreachable');
    await (b as SimTransport).stop();
  });
});
