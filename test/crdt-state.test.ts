import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeMessage, encodeMessage, type StateMessage } from '../crdt/codec.ts';
import { makeHostRecord, makeWorkload } from '../crdt/fixtures.ts';
import { bucketOf } from '../crdt/hash.ts';
import { ClusterState, encodeDelta, type StateDelta } from '../crdt/state.ts';

/** Send `msg` from→to over bytes; process replies recursively (ping-pong until quiet). */
function deliver(msg: StateMessage, from: ClusterState, to: ClusterState): number {
  const got = decodeMessage(encodeMessage(msg), from.actor);
  let msgs = 1;
  for (const reply of to.handle(got, from.actor)) msgs += deliver(reply, to, from);
  return msgs;
}

describe('ClusterState convergence', () => {
  it('N replicas converge after lossy, duplicated, reordered gossip plus one anti-entropy pass', () => {
    const N = 5;
    const opArb = fc.record({
      at: fc.nat(N - 1),
      kind: fc.constantFrom('host', 'host', 'put', 'update', 'remove', 'tomb'),
      d: fc.constantFrom('d1', 'd2', 'd3'),
      n: fc.nat(9),
      deliverMask: fc.nat(2 ** N - 1),
      dup: fc.boolean(),
    });
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 40 }), fc.boolean(), (ops, bucketed) => {
        const reps = Array.from({ length: N }, (_, i) => new ClusterState(`agent-${i}`));
        const versions = new Array(N).fill(0);
        const pending: { to: number; delta: StateDelta }[] = [];
        ops.forEach((op, i) => {
          const s = reps[op.at]!;
          const now = 1000 + i;
          let delta: StateDelta = { hosts: [], intents: [] };
          if (op.kind === 'host') {
            versions[op.at] = Math.max(versions[op.at] + 1, (s.hosts.versionOf(`agent-${op.at}`) ?? 0) + 1);
            const rec = makeHostRecord(`agent-${op.at}`, versions[op.at], {
              workloads: Array.from({ length: op.n % 3 }, (_, j) => makeWorkload(`w${j}`, op.d, j)),
              updatedAt: now,
            });
            s.hosts.merge(rec);
            delta = { hosts: [rec], intents: [] };
          } else if (op.kind === 'tomb') {
            delta = { hosts: [s.hosts.tombstone(`agent-${(op.at + 1) % N}`, now)], intents: [] };
          } else {
            const w =
              op.kind === 'put'
                ? s.intents.put(
                    op.d,
                    { name: op.d, spec: { image: `img:${op.n}` }, replicas: op.n, strategy: 'spread' },
                    now,
                  )
                : op.kind === 'update'
                  ? s.intents.update(op.d, { replicas: op.n }, now - op.n)
                  : s.intents.remove(op.d, now);
            if (w) delta = { hosts: [], intents: [w] };
          }
          for (let r = 0; r < N; r++) {
            if (r !== op.at && op.deliverMask & (1 << r)) pending.push({ to: r, delta });
          }
          // Deliver a random slice of pending messages now (reordering); duplicate some.
          while (pending.length > op.n % 4) {
            const m = pending.splice(op.n % pending.length, 1)[0]!;
            const msg = decodeMessage(encodeDelta(m.delta), 'x');
            reps[m.to]!.handle(msg, 'x');
            if (op.dup) reps[m.to]!.handle(msg, 'x');
          }
        });
        // pending messages are lost. Anti-entropy: a ring of digest exchanges, twice around —
        // whole digests, or (as agents do) digests of the buckets whose tags differ.
        for (let round = 0; round < 2; round++) {
          for (let i = 0; i < N; i++) {
            const a = reps[i]!;
            const b = reps[(i + 1) % N]!;
            if (!bucketed) deliver({ t: 'digest', ...a.digest() }, a, b);
            else {
              const differ = a.differingBuckets(b.bucketTags());
              if (differ.length > 0) deliver({ t: 'digest', ...a.digest(differ) }, a, b);
            }
          }
        }
        const h = reps[0]!.hash();
        for (const s of reps) expect(s.hash()).toBe(h);
        for (const s of reps) expect(s.bucketTags()).toEqual(reps[0]!.bucketTags());
        expect(reps[1]!.snapshot()).toEqual(reps[0]!.snapshot());
        // Bucket tags are kept incrementally: a state rebuilt from the snapshot has the same.
        expect(ClusterState.decodeSnapshot(reps[2]!.encodeSnapshot(), 'r').bucketTags()).toEqual(
          reps[2]!.bucketTags(),
        );
      }),
      { numRuns: 150 },
    );
  });

  it('two agents reconcile in 1.5 round trips (digest → delta+want → delta)', () => {
    const a = new ClusterState('a');
    const b = new ClusterState('b');
    for (let i = 0; i < 50; i++) (i % 2 ? a : b).hosts.merge(makeHostRecord(`h${i}`, 1 + (i % 3)));
    a.intents.put('d1', { name: 'x', spec: {}, replicas: 1, strategy: 'spread' }, 1);
    b.intents.put('d2', { name: 'y', spec: {}, replicas: 2, strategy: 'spread' }, 1);
    const msgs = deliver({ t: 'digest', ...a.digest() }, a, b);
    expect(msgs).toBe(4); // digest, delta, want, delta
    expect(a.hash()).toBe(b.hash());
    expect(b.handle({ t: 'digest', ...a.digest() }, 'a')).toEqual([]);
  });

  it('digest buckets: only the buckets that differ are digested, and that is enough', () => {
    const a = new ClusterState('a');
    const spec = { resources: { cpu: { milli: 100 } }, image: 'busybox' };
    for (let i = 0; i < 20; i++) a.hosts.merge(makeHostRecord(`host-${i}`, 3));
    for (let i = 0; i < 2_000; i++)
      a.intents.put(`deploy-${i}`, { name: `d${i}`, spec, replicas: 1, strategy: 'spread' }, i);
    const b = ClusterState.decodeSnapshot(a.encodeSnapshot(), 'b');
    expect(b.bucketTags()).toEqual(a.bucketTags());
    expect(a.differingBuckets(b.bucketTags())).toEqual([]);
    // In flight: two intents and a host record on a, one intent on b.
    a.intents.update('deploy-7', { replicas: 3 }, 5_000);
    a.intents.put('deploy-new', { name: 'n', spec, replicas: 2, strategy: 'spread' }, 5_001);
    a.hosts.merge(makeHostRecord('host-4', 4));
    b.intents.remove('deploy-1234', 5_002);
    const differ = a.differingBuckets(b.bucketTags());
    expect(differ.length).toBeGreaterThanOrEqual(1);
    expect(differ.length).toBeLessThanOrEqual(4);
    expect(differ.some((x) => x < 128)).toBe(true); // the host bucket
    const partial = encodeMessage({ t: 'digest', ...a.digest(differ) });
    const whole = encodeMessage({ t: 'digest', ...a.digest() });
    expect(partial.length * 20).toBeLessThan(whole.length);
    // The receiver reconciles within those buckets only: it pushes what differs there (its
    // version of deploy-7 too: an intent merge keeps the newer registers) and nothing else.
    const replies = b.handle(decodeMessage(partial, 'a'), 'a');
    const pushed = replies.find((r) => r.t === 'delta');
    const ids = pushed?.t === 'delta' ? pushed.intents.map((w) => w.id) : [];
    expect(ids).toContain('deploy-1234');
    expect(ids.length).toBeLessThanOrEqual(3);
    for (const id of ids) expect(differ).toContain(128 + bucketOf(id));
    deliver({ t: 'digest', ...a.digest(differ) }, a, b);
    expect(a.hash()).toBe(b.hash());
    expect(a.bucketTags()).toEqual(b.bucketTags());
  });

  it('summary and snapshot', () => {
    const s = new ClusterState('a');
    s.hosts.merge(makeHostRecord('h1', 1));
    s.hosts.tombstone('h2', 10);
    s.intents.put('d1', { name: 'x', spec: { a: 1 }, replicas: 1, strategy: 'spread' }, 1);
    expect(s.summary()).toEqual({
      hash: s.hash(),
      hosts: { entries: 2, live: 1 },
      intents: { entries: 1, live: 1 },
    });
    const back = ClusterState.decodeSnapshot(s.encodeSnapshot(), 'a');
    expect(back.summary()).toEqual(s.summary());
    // A restored agent's clock continues above every stamp it persisted.
    const w = back.intents.update('d1', { replicas: 2 }, 0)!;
    expect(w.fields[0]![1][0]).toBeGreaterThanOrEqual(1);
    expect(back.intents.get('d1')!.replicas).toBe(2);
  });
});

describe('bounded size', () => {
  it('100k host record updates: state size depends on hosts, not on updates', () => {
    const s = new ClusterState('a');
    const H = 100;
    const t0 = performance.now();
    let maxRecord = 0;
    for (let i = 0; i < 100_000; i++) {
      const h = i % H;
      const rec = makeHostRecord(`host-${h}`, 1 + Math.floor(i / H), {
        workloads: Array.from({ length: i % 11 }, (_, j) => makeWorkload(`w-${h}-${j}`, `d${j}`, j)),
        updatedAt: i,
      });
      s.hosts.merge(rec);
      if (i % 1000 === 0) {
        s.hash();
        maxRecord = Math.max(maxRecord, JSON.stringify(rec).length);
      }
    }
    const ms = performance.now() - t0;
    const size = s.encodeSnapshot().length;
    const bound = H * (maxRecord + 64);
    console.log(
      `[crdt] 100k host updates over ${H} hosts: snapshot ${size} B (bound ${H} × max record ${maxRecord} B = ${bound} B), ${(ms / 100).toFixed(2)} µs/update incl. record build`,
    );
    expect(size).toBeLessThan(bound);
  });

  it('100k intent edits on two replicas: state size depends on deploys, not on edits', () => {
    const a = new ClusterState('agent-a');
    const b = new ClusterState('agent-b');
    const D = 100;
    const sizeAt: number[] = [];
    const t0 = performance.now();
    for (let i = 0; i < 100_000; i++) {
      const from = i % 2 ? a : b;
      const to = i % 2 ? b : a;
      const id = `deploy-${i % D}`;
      const w =
        i < D
          ? from.intents.put(
              id,
              {
                name: id,
                spec: { image: 'nginx:1', env: { N: '0' }, ports: [80] },
                replicas: 1,
                strategy: 'spread',
              },
              i,
            )
          : from.intents.update(
              id,
              i % 3
                ? { replicas: i % 50 }
                : { spec: { image: `nginx:${i}`, env: { N: String(i) }, ports: [80] } },
              i,
            );
      if (w && i % 5 !== 0) to.apply({ hosts: [], intents: [w] }); // 20% lost until anti-entropy
      if (i === 999 || i === 9_999 || i === 99_999) sizeAt.push(a.encodeSnapshot().length);
    }
    deliver({ t: 'digest', ...a.digest() }, a, b);
    const ms = performance.now() - t0;
    expect(a.hash()).toBe(b.hash());
    console.log(
      `[crdt] 100k intent edits over ${D} deploys: snapshot ${sizeAt.join(' → ')} B after 1k → 10k → 100k edits, ${(ms / 100).toFixed(2)} µs/edit (edit + merge)`,
    );
    expect(sizeAt[2]!).toBeLessThan(sizeAt[0]! * 1.1); // no growth with edits (only digit widths)
    expect(sizeAt[2]!).toBeLessThan(D * 400);
  });
});
