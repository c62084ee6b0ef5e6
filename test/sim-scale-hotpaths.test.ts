import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { HostTable } from '../crdt/hosts.ts';
import type { HostEntry } from '../crdt/types.ts';

/** Caches added for many-agent runs must never change an answer. */

function tomb(id: string, version: number): HostEntry {
  return { id, version, deleted: true, updatedAt: version };
}

describe('hot-path caches', () => {
  it('HostTable.all() stays sorted and current across merges, replacements, tombstones and gc', () => {
    const op = fc.record({
      kind: fc.constantFrom('merge', 'tomb', 'gc', 'read'),
      id: fc.integer({ min: 0, max: 30 }),
      version: fc.integer({ min: 1, max: 50 }),
    });
    fc.assert(
      fc.property(fc.array(op, { maxLength: 200 }), (ops) => {
        const t = new HostTable();
        const model = new Map<string, HostEntry>();
        let horizon = Number.NEGATIVE_INFINITY;
        for (const o of ops) {
          const id = `h${String(o.id).padStart(3, '0')}`;
          if (o.kind === 'merge') {
            const e = tomb(id, o.version);
            const cur = model.get(id);
            if (t.merge(e) === 'newer') model.set(id, e);
            // Refused: not newer, or a peer's tombstone older than what gc collected, for an id gone.
            else expect(cur !== undefined || e.updatedAt < horizon).toBe(true);
          } else if (o.kind === 'tomb') {
            model.set(id, t.tombstone(id, o.version));
          } else if (o.kind === 'gc') {
            horizon = Math.max(horizon, o.version);
            t.gc(o.version);
            for (const [k, e] of model) if (e.deleted && e.updatedAt < o.version) model.delete(k);
          }
          const want = [...model.values()].sort((a, b) => (a.id < b.id ? -1 : 1));
          const got = t.all();
          expect(got).toEqual(want);
          got.pop(); // callers get a copy
          expect(t.all().length).toBe(want.length);
        }
      }),
      { numRuns: 200 },
    );
  });
});
