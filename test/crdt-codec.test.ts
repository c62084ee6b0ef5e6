import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decodeMessage,
  encodeMessage,
  MESSAGE_LIMITS,
  type StateMessage,
  StateMessageError,
} from '../crdt/codec.ts';
import { makeHostRecord, makeWorkload } from '../crdt/fixtures.ts';
import { ClusterState, encodeDelta } from '../crdt/state.ts';

const enc = new TextEncoder();

function sampleState(): ClusterState {
  const s = new ClusterState('agent-a');
  for (let i = 0; i < 5; i++) {
    s.hosts.merge(
      makeHostRecord(`h${i}`, i + 1, {
        workloads: [makeWorkload(`w${i}`, 'd1', 0)],
        capacity: {
          ...makeHostRecord('x', 1).capacity,
          gpus: [{ index: 0, model: 'A100', memory: 80 * 2 ** 30 }],
        },
      }),
    );
  }
  s.hosts.tombstone('h4', 5000);
  s.intents.put(
    'd1',
    { name: 'web', spec: { image: 'nginx', env: { A: '1' } }, replicas: 2, strategy: 'spread' },
    1000,
  );
  s.intents.put('d2', { name: 'db', spec: {}, replicas: 1, strategy: 'binpack' }, 1001);
  s.intents.remove('d2', 1002);
  return s;
}

/** The error thrown by `fn` (fails the test if it returns). */
function errorOf(fn: () => unknown): StateMessageError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(StateMessageError);
    return e as StateMessageError;
  }
  throw new Error('expected a StateMessageError');
}

/** Decode a valid snapshot as JSON, let `mutate` corrupt it, return the error path. */
function pathAfter(
  mutate: (
    m: Record<string, unknown> & { hosts: Record<string, unknown>[]; intents: Record<string, unknown>[] },
  ) => void,
): string {
  const m = JSON.parse(new TextDecoder().decode(encodeDelta(sampleState().snapshot())));
  mutate(m);
  const e = errorOf(() => decodeMessage(enc.encode(JSON.stringify(m)), 'peer-x'));
  expect(e.peer).toBe('peer-x');
  expect(e.message).toContain('peer-x');
  return e.path;
}

describe('codec round trip', () => {
  it('delta, digest, want and snapshot survive encode/decode', () => {
    const s = sampleState();
    const msgs: StateMessage[] = [
      { t: 'delta', ...s.snapshot() },
      { t: 'digest', ...s.digest() },
      { t: 'digest', ...s.digest([3, 130, 255]) },
      { t: 'want', hosts: ['h1'], intents: ['d1'] },
    ];
    for (const m of msgs) expect(decodeMessage(encodeMessage(m), 'p')).toEqual(m);
    const back = ClusterState.decodeSnapshot(s.encodeSnapshot(), 'agent-b');
    expect(back.hash()).toBe(s.hash());
    expect(Buffer.from(back.encodeSnapshot()).equals(Buffer.from(s.encodeSnapshot()))).toBe(true);
  });
});

describe('codec rejects malformed input with a field path and the sender', () => {
  it('digest buckets: ascending, unique, in range, and only on a digest', () => {
    const digest = (buckets: unknown) =>
      enc.encode(
        JSON.stringify({ v: 1, t: 'digest', hash: 'a'.repeat(64), hosts: [], intents: [], buckets }),
      );
    expect(decodeMessage(digest([0, 5, 255]), 'p')).toMatchObject({ buckets: [0, 5, 255] });
    expect(errorOf(() => decodeMessage(digest([5, 5]), 'p')).path).toBe('buckets[1]');
    expect(errorOf(() => decodeMessage(digest([7, 2]), 'p')).path).toBe('buckets[1]');
    expect(errorOf(() => decodeMessage(digest([256]), 'p')).path).toBe('buckets[0]');
    expect(errorOf(() => decodeMessage(digest([-1]), 'p')).path).toBe('buckets[0]');
    expect(errorOf(() => decodeMessage(digest([1.5]), 'p')).path).toBe('buckets[0]');
    expect(errorOf(() => decodeMessage(digest('all'), 'p')).path).toBe('buckets');
    const delta = enc.encode(JSON.stringify({ v: 1, t: 'delta', hosts: [], intents: [], buckets: [1] }));
    expect(errorOf(() => decodeMessage(delta, 'p')).path).toBe('buckets');
  });

  it('names the offending field', () => {
    expect(
      pathAfter((m) => {
        (m.hosts[3]!.capacity as Record<string, unknown>).memory = -1;
      }),
    ).toBe('hosts[3].capacity.memory');
    expect(
      pathAfter((m) => {
        (m.hosts[0]!.capacity as Record<string, unknown>).memory = '1G';
      }),
    ).toBe('hosts[0].capacity.memory');
    expect(
      pathAfter((m) => {
        (
          (m.hosts[1]!.workloads as Record<string, unknown>[])[0]!.resources as Record<string, unknown>
        ).cores = [3, 1];
      }),
    ).toBe('hosts[1].workloads[0].resources.cores[1]');
    expect(
      pathAfter((m) => {
        (m.hosts[2] as Record<string, unknown>).extra = 1;
      }),
    ).toBe('hosts[2].extra');
    expect(
      pathAfter((m) => {
        m.hosts[0]!.version = 0;
      }),
    ).toBe('hosts[0].version');
    expect(
      pathAfter((m) => {
        ((m.intents[0]!.fields as unknown[][])[0]![1] as unknown[])[0] = 1.5;
      }),
    ).toBe('intents[0].fields[0][1][0]');
    expect(
      pathAfter((m) => {
        (m.intents[0]!.fields as unknown[][]).push(['owner', [1, 0, 'a'], 'x']);
      }),
    ).toBe('intents[0].fields[5][0]');
    expect(
      pathAfter((m) => {
        m.v = 2;
      }),
    ).toBe('v');
  });

  it('rejects prototype-pollution keys anywhere', () => {
    const s = encodeMessage({ t: 'delta', ...sampleState().snapshot() });
    const text = new TextDecoder().decode(s);
    const cases: [string, string][] = [
      [
        text.replace('"labels":{"zone":"z1"}', '"labels":{"zone":"z1","__proto__":{"x":1}}'),
        'hosts[0].capacity.labels.__proto__',
      ],
      [
        text.replace('{"A":"1"}', '{"A":"1","constructor":{"prototype":1}}'),
        'intents[0].fields[2][2].constructor',
      ],
      [text.replace('"deleted":false', '"__proto__":{"polluted":1},"deleted":false'), 'hosts[0].__proto__'],
      [text.replace('"t":"delta"', '"t":"delta","__proto__":{"polluted":1}'), '__proto__'],
    ];
    for (const [bad, path] of cases) {
      expect(bad).not.toBe(text);
      expect(errorOf(() => decodeMessage(enc.encode(bad), 'evil')).path).toBe(path);
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(({} as Record<string, unknown>).x).toBeUndefined();
  });

  it('enforces size and count bounds', () => {
    const big = new Uint8Array(MESSAGE_LIMITS.maxBytes + 1);
    expect(errorOf(() => decodeMessage(big, 'p')).path).toBe('');
    const many = enc.encode(
      JSON.stringify({ v: 1, t: 'want', hosts: Array(MESSAGE_LIMITS.maxHosts + 1).fill('h'), intents: [] }),
    );
    expect(errorOf(() => decodeMessage(many, 'p')).path).toBe('hosts');
    const deep = enc.encode(
      `{"v":1,"t":"delta","hosts":[],"intents":[{"id":"d","deleted":null,"fields":[["spec.x",[1,0,"a"],${'['.repeat(100)}${']'.repeat(100)}]]}]}`,
    );
    expect(errorOf(() => decodeMessage(deep, 'p')).reason).toMatch(/deeper/);
    const veryDeep = enc.encode('['.repeat(200_000) + ']'.repeat(200_000));
    expect(errorOf(() => decodeMessage(veryDeep, 'p')).path).toBe('');
    expect(errorOf(() => decodeMessage('not bytes' as unknown as Uint8Array, 'p')).reason).toBe(
      'expected bytes',
    );
  });

  it('random bytes and random JSON only ever raise StateMessageError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        errorOf(() => decodeMessage(bytes, 'fuzz'));
      }),
      { numRuns: 500 },
    );
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        errorOf(() => decodeMessage(enc.encode(JSON.stringify(v)), 'fuzz'));
      }),
      { numRuns: 500 },
    );
  });

  it('mutating any leaf of a valid message to a wrong type is rejected (or harmless), never corrupts state', () => {
    const valid = JSON.parse(new TextDecoder().decode(encodeDelta(sampleState().snapshot())));
    const leaves: (string | number)[][] = [];
    const walk = (x: unknown, p: (string | number)[]) => {
      if (x !== null && typeof x === 'object') {
        for (const [k, v] of Object.entries(x)) walk(v, [...p, Array.isArray(x) ? Number(k) : k]);
      } else leaves.push(p);
    };
    walk(valid, []);
    const target = new ClusterState('t');
    target.hosts.merge(makeHostRecord('h0', 1));
    const before = target.hash();
    fc.assert(
      fc.property(
        fc.constantFrom(...leaves),
        fc.constantFrom<unknown>(-1, 'x', null, true, {}, [], 1e300, 0.5),
        (path, val) => {
          const m = structuredClone(valid);
          let o = m;
          for (const k of path.slice(0, -1)) o = o[k];
          o[path.at(-1)!] = val;
          try {
            const msg = decodeMessage(enc.encode(JSON.stringify(m)), 'fuzz');
            target.handle(msg, 'fuzz'); // accepted values are valid: applying them is allowed
            target.hosts.merge(makeHostRecord('h0', 1));
          } catch (e) {
            expect(e).toBeInstanceOf(StateMessageError);
            expect((e as StateMessageError).path).not.toBe('');
          }
        },
      ),
      { numRuns: 500 },
    );
    // A rejected message leaves state unchanged.
    const fresh = new ClusterState('u');
    const h = fresh.hash();
    const bad = structuredClone(valid);
    bad.hosts[3].capacity.cores = -3; // a late host: earlier ones are valid
    expect(() => fresh.handle(decodeMessage(enc.encode(JSON.stringify(bad)), 'p'), 'p')).toThrow(
      StateMessageError,
    );
    expect(fresh.hash()).toBe(h);
    expect(target.hash()).not.toBe(before); // sanity: valid parts of fuzzed messages did apply
  });

  it('state-dependent bounds are checked before anything is applied', () => {
    const s = new ClusterState('a');
    const h = s.hash();
    const fields = Array.from({ length: 200 }, (_, i) => [`spec.k${i}`, [1, 0, 'x'], i] as const);
    const wires = Array.from({ length: 6 }, (_, j) => ({
      id: 'd',
      fields: fields.map(([k, , v]) => [`${k}_${j}`, [1, 0, 'x'], v] as const),
      deleted: null,
    }));
    const err = errorOf(() =>
      s.apply(
        {
          hosts: [makeHostRecord('h', 1)],
          intents: [{ id: 'd', fields: wires.flatMap((w) => w.fields), deleted: null }],
        },
        'p',
      ),
    );
    expect(err.path).toBe('intents[0].fields');
    expect(s.hash()).toBe(h);
  });
});
