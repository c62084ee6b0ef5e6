import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  type Constraint,
  formatConstraint,
  matchesConstraint,
  parseConstraint,
  parseConstraints,
  unmetConstraints,
} from '../allocator/index.ts';

function parsed(s: string): Constraint {
  const r = parseConstraint(s);
  if (!r.ok) throw new Error(r.error.message);
  return r.constraint;
}

function error(s: string): string {
  const r = parseConstraint(s);
  if (r.ok) throw new Error(`expected a parse error for ${s}`);
  return r.error.message;
}

describe('constraint syntax', () => {
  it('parses every form', () => {
    expect(parsed('zone = a')).toEqual({ op: 'eq', key: 'zone', value: 'a' });
    expect(parsed('zone==a')).toEqual({ op: 'eq', key: 'zone', value: 'a' });
    expect(parsed('zone != a')).toEqual({ op: 'ne', key: 'zone', value: 'a' });
    expect(parsed('zone in (a, b,c)')).toEqual({ op: 'in', key: 'zone', values: ['a', 'b', 'c'] });
    expect(parsed('zone not in (a)')).toEqual({ op: 'notin', key: 'zone', values: ['a'] });
    expect(parsed('gpu')).toEqual({ op: 'exists', key: 'gpu' });
    expect(parsed(' ! gpu ')).toEqual({ op: 'absent', key: 'gpu' });
    expect(parsed('shoal.io/rack = "r 1"')).toEqual({ op: 'eq', key: 'shoal.io/rack', value: 'r 1' });
    expect(parsed("os in ('deb\\'ian', x)")).toEqual({ op: 'in', key: 'os', values: ["deb'ian", 'x'] });
    expect(parsed('in in (not)')).toEqual({ op: 'in', key: 'in', values: ['not'] });
  });

  it('explains parse errors with the column', () => {
    expect(error('')).toBe('constraint "": empty constraint at column 1');
    expect(error('zone =')).toBe(
      `constraint "zone =": expected a value after '=', found end of input at column 7`,
    );
    expect(error('zone in a')).toBe(`constraint "zone in a": expected '(' after 'in', found 'a' at column 9`);
    expect(error('zone in (a b)')).toBe(
      `constraint "zone in (a b)": expected ',' or ')' in value list, found 'b' at column 12`,
    );
    expect(error('zone in ()')).toBe(
      `constraint "zone in ()": expected a value after '(', found ')' at column 10`,
    );
    expect(error('zone not (a)')).toBe(
      `constraint "zone not (a)": expected 'in' after 'not', found '(' at column 10`,
    );
    expect(error('zone ~ a')).toBe(`constraint "zone ~ a": unexpected character '~' at column 6`);
    expect(error('zone = a b')).toBe(
      `constraint "zone = a b": unexpected 'b' after a complete constraint at column 10`,
    );
    expect(error('zone = "a')).toBe(`constraint "zone = "a": unterminated quoted value starting at column 8`);
    expect(error('"zone" = a')).toBe(
      `constraint ""zone" = a": expected a label key, found "zone" at column 1`,
    );
    expect(error('zone > 3')).toBe(`constraint "zone > 3": unexpected character '>' at column 6`);
    expect(error('!= a')).toBe(`constraint "!= a": expected a label key, found '!=' at column 1`);
  });

  it('collects every error of a list', () => {
    const r = parseConstraints(['zone = a', 'x in', 'y =']);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.errors.map((e) => e.input)).toEqual(['x in', 'y =']);
  });
});

describe('constraint matching', () => {
  const labels = { zone: 'c', gpu: 'yes' };
  it('follows selector semantics (!= and not in match a missing key)', () => {
    const m = (s: string, l: Record<string, string> = labels): boolean => matchesConstraint(parsed(s), l);
    expect(m('zone = c')).toBe(true);
    expect(m('zone != c')).toBe(false);
    expect(m('rack != r1')).toBe(true);
    expect(m('zone in (a,c)')).toBe(true);
    expect(m('rack in (a)')).toBe(false);
    expect(m('zone not in (a,b)')).toBe(true);
    expect(m('rack not in (a)')).toBe(true);
    expect(m('gpu')).toBe(true);
    expect(m('!gpu')).toBe(false);
    expect(m('constructor')).toBe(false); // own properties only
    expect(m('!toString')).toBe(true);
  });

  it('reports unmet constraints with the actual value', () => {
    expect(unmetConstraints([parsed('zone in (a,b)'), parsed('gpu'), parsed('rack = r1')], labels)).toEqual([
      'label: zone in (a,b) not satisfied (zone=c)',
      'label: rack = r1 not satisfied (rack unset)',
    ]);
  });
});

describe('format/parse round trip', () => {
  const key = fc.stringMatching(/^[A-Za-z0-9_.\-/:@+]{1,12}$/);
  const value = fc.string({ maxLength: 8 });
  const constraint: fc.Arbitrary<Constraint> = fc.oneof(
    fc.record({ op: fc.constantFrom('eq' as const, 'ne' as const), key, value }),
    fc.record({
      op: fc.constantFrom('in' as const, 'notin' as const),
      key,
      values: fc.array(value, { minLength: 1, maxLength: 4 }),
    }),
    fc.record({ op: fc.constantFrom('exists' as const, 'absent' as const), key }),
  );
  it('parseConstraint(formatConstraint(c)) = c', () => {
    fc.assert(
      fc.property(constraint, (c) => {
        expect(parsed(formatConstraint(c))).toEqual(c);
      }),
    );
  });
});
