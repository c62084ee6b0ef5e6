import { describe, expect, it } from 'vitest';
import { rendezvous } from '../node/core/placement.ts';

/** The coordinator of a deploy: the member with the highest rendezvous weight (ties: lower id). */
function coordinator(deployId: string, members: readonly string[]): string {
  let best = members[0]!;
  for (const m of members) {
    const w = rendezvous(deployId, m);
    const b = rendezvous(deployId, best);
    if (w > b || (w === b && m < best)) best = m;
  }
  return best;
}

describe('rendezvous weights', () => {
  const members = Array.from({ length: 10 }, (_, i) => `12D3KooWPeer${String(i).padStart(2, '0')}xyz`);

  it('spread coordination evenly over members (10,000 deploys, 10 members: each 10% ± 1.5%)', () => {
    const counts = new Map<string, number>();
    for (let i = 0; i < 10_000; i++) {
      const c = coordinator(`web-${i}`, members);
      counts.set(c, (counts.get(c) ?? 0) + 1);
    }
    expect(counts.size).toBe(10);
    for (const n of counts.values()) {
      expect(n).toBeGreaterThan(850);
      expect(n).toBeLessThan(1150);
    }
  });

  it('a member leaving moves only the deploys it coordinated (minimal disruption)', () => {
    const gone = members[3]!;
    const rest = members.filter((m) => m !== gone);
    let moved = 0;
    for (let i = 0; i < 5_000; i++) {
      const before = coordinator(`api-${i}`, members);
      const after = coordinator(`api-${i}`, rest);
      if (before !== gone) expect(after).toBe(before);
      else moved++;
    }
    expect(moved).toBeGreaterThan(350);
    expect(moved).toBeLessThan(650);
  });

  it('is a 48-bit non-negative integer, stable, and differs across deploys and members', () => {
    const w = rendezvous('d', 'm');
    expect(Number.isSafeInteger(w)).toBe(true);
    expect(w).toBeGreaterThanOrEqual(0);
    expect(w).toBeLessThan(2 ** 48);
    expect(rendezvous('d', 'm')).toBe(w);
    const seen = new Set<number>();
    for (let i = 0; i < 2_000; i++) seen.add(rendezvous(`d${i}`, 'm')).add(rendezvous('d', `m${i}`));
    expect(seen.size).toBeGreaterThan(3_990);
  });
});
