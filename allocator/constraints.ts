/**
 * Label constraints.
 *
 *   key = v   key == v   key != v   key in (a, b)   key not in (a, b)   key   !key
 *
 * Keys and bare values are runs of `[A-Za-z0-9_.\-/:@+]`; values may also be quoted with '…' or
 * "…" (backslash escapes the quote and itself). Like Kubernetes selectors, `!=` and `not in` are
 * satisfied by hosts that lack the key.
 */
import type { Constraint } from './types.ts';
import { own } from './units.ts';

export interface ConstraintParseError {
  input: string;
  /** 1-based column of the offending character (input length + 1 at end of input). */
  column: number;
  message: string;
}

export type ParseResult = { ok: true; constraint: Constraint } | { ok: false; error: ConstraintParseError };

type Token =
  | { kind: 'word'; text: string; col: number; quoted: boolean }
  | { kind: 'op'; text: '=' | '==' | '!=' | '!'; col: number }
  | { kind: 'punct'; text: '(' | ')' | ','; col: number }
  | { kind: 'end'; col: number };

const WORD = /[A-Za-z0-9_.\-/:@+]/;

class ParseFailure extends Error {
  constructor(
    readonly column: number,
    readonly detail: string,
  ) {
    super(detail);
  }
}

function tokenize(input: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < input.length) {
    const c = input[i]!;
    const col = i + 1;
    if (c === ' ' || c === '\t') {
      i++;
    } else if (c === '(' || c === ')' || c === ',') {
      tokens.push({ kind: 'punct', text: c, col });
      i++;
    } else if (c === '=') {
      const two = input[i + 1] === '=';
      tokens.push({ kind: 'op', text: two ? '==' : '=', col });
      i += two ? 2 : 1;
    } else if (c === '!') {
      const two = input[i + 1] === '=';
      tokens.push({ kind: 'op', text: two ? '!=' : '!', col });
      i += two ? 2 : 1;
    } else if (c === '"' || c === "'") {
      let text = '';
      let j = i + 1;
      for (;;) {
        const d = input[j];
        if (d === undefined) throw new ParseFailure(col, `unterminated quoted value starting`);
        if (d === c) break;
        if (d === '\\' && (input[j + 1] === c || input[j + 1] === '\\')) {
          text += input[j + 1];
          j += 2;
        } else {
          text += d;
          j++;
        }
      }
      tokens.push({ kind: 'word', text, col, quoted: true });
      i = j + 1;
    } else if (WORD.test(c)) {
      let j = i;
      while (j < input.length && WORD.test(input[j]!)) j++;
      tokens.push({ kind: 'word', text: input.slice(i, j), col, quoted: false });
      i = j;
    } else {
      throw new ParseFailure(col, `unexpected character '${c}'`);
    }
  }
  tokens.push({ kind: 'end', col: input.length + 1 });
  return tokens;
}

function describe(t: Token): string {
  if (t.kind === 'end') return 'end of input';
  if (t.kind === 'word') return t.quoted ? `"${t.text}"` : `'${t.text}'`;
  return `'${t.text}'`;
}

/** Parses one constraint; errors name the column and what was expected. */
export function parseConstraint(input: string): ParseResult {
  try {
    return { ok: true, constraint: parseTokens(tokenize(input)) };
  } catch (e) {
    if (!(e instanceof ParseFailure)) throw e;
    return {
      ok: false,
      error: { input, column: e.column, message: `constraint "${input}": ${e.detail} at column ${e.column}` },
    };
  }
}

function parseTokens(tokens: Token[]): Constraint {
  let pos = 0;
  const peek = (): Token => tokens[pos]!;
  const next = (): Token => tokens[pos++]!;
  const expectEnd = (): void => {
    const t = peek();
    if (t.kind !== 'end')
      throw new ParseFailure(t.col, `unexpected ${describe(t)} after a complete constraint`);
  };
  const key = (): string => {
    const t = next();
    if (t.kind !== 'word' || t.quoted)
      throw new ParseFailure(t.col, `expected a label key, found ${describe(t)}`);
    return t.text;
  };
  const value = (after: string): string => {
    const t = next();
    if (t.kind !== 'word')
      throw new ParseFailure(t.col, `expected a value after ${after}, found ${describe(t)}`);
    return t.text;
  };
  const list = (after: string): string[] => {
    const open = next();
    if (open.kind !== 'punct' || open.text !== '(') {
      throw new ParseFailure(open.col, `expected '(' after ${after}, found ${describe(open)}`);
    }
    const values = [value(`'('`)];
    for (;;) {
      const t = next();
      if (t.kind === 'punct' && t.text === ')') break;
      if (t.kind === 'punct' && t.text === ',') {
        values.push(value(`','`));
        continue;
      }
      throw new ParseFailure(t.col, `expected ',' or ')' in value list, found ${describe(t)}`);
    }
    return values;
  };

  const first = peek();
  if (first.kind === 'end') throw new ParseFailure(first.col, 'empty constraint');
  if (first.kind === 'op' && first.text === '!') {
    next();
    const k = key();
    expectEnd();
    return { op: 'absent', key: k };
  }
  const k = key();
  const t = next();
  if (t.kind === 'end') return { op: 'exists', key: k };
  if (t.kind === 'op' && (t.text === '=' || t.text === '==')) {
    const v = value(`'${t.text}'`);
    expectEnd();
    return { op: 'eq', key: k, value: v };
  }
  if (t.kind === 'op' && t.text === '!=') {
    const v = value(`'!='`);
    expectEnd();
    return { op: 'ne', key: k, value: v };
  }
  if (t.kind === 'word' && !t.quoted && t.text === 'in') {
    const values = list(`'in'`);
    expectEnd();
    return { op: 'in', key: k, values };
  }
  if (t.kind === 'word' && !t.quoted && t.text === 'not') {
    const inTok = next();
    if (inTok.kind !== 'word' || inTok.quoted || inTok.text !== 'in') {
      throw new ParseFailure(inTok.col, `expected 'in' after 'not', found ${describe(inTok)}`);
    }
    const values = list(`'not in'`);
    expectEnd();
    return { op: 'notin', key: k, values };
  }
  throw new ParseFailure(
    t.col,
    `expected '=', '!=', 'in' or 'not in' after key '${k}', found ${describe(t)}`,
  );
}

/** Parses a list; returns every error, not only the first. */
export function parseConstraints(
  inputs: readonly string[],
): { ok: true; constraints: Constraint[] } | { ok: false; errors: ConstraintParseError[] } {
  const constraints: Constraint[] = [];
  const errors: ConstraintParseError[] = [];
  for (const input of inputs) {
    const r = parseConstraint(input);
    if (r.ok) constraints.push(r.constraint);
    else errors.push(r.error);
  }
  return errors.length > 0 ? { ok: false, errors } : { ok: true, constraints };
}

const BARE = /^[A-Za-z0-9_.\-/:@+]+$/;

function quote(v: string): string {
  return BARE.test(v) ? v : `"${v.replace(/[\\"]/g, (m) => `\\${m}`)}"`;
}

/** Canonical text of a constraint; `parseConstraint(formatConstraint(c))` gives back `c`. */
export function formatConstraint(c: Constraint): string {
  switch (c.op) {
    case 'eq':
      return `${c.key} = ${quote(c.value)}`;
    case 'ne':
      return `${c.key} != ${quote(c.value)}`;
    case 'in':
      return `${c.key} in (${c.values.map(quote).join(',')})`;
    case 'notin':
      return `${c.key} not in (${c.values.map(quote).join(',')})`;
    case 'exists':
      return c.key;
    case 'absent':
      return `!${c.key}`;
  }
}

export function matchesConstraint(c: Constraint, labels: Readonly<Record<string, string>>): boolean {
  const v = own(labels, c.key);
  switch (c.op) {
    case 'eq':
      return v === c.value;
    case 'ne':
      return v !== c.value;
    case 'in':
      return v !== undefined && c.values.includes(v);
    case 'notin':
      return v === undefined || !c.values.includes(v);
    case 'exists':
      return v !== undefined;
    case 'absent':
      return v === undefined;
  }
}

/** "label: zone in (a,b) not satisfied (zone=c)" for every unmet constraint, in order. */
export function unmetConstraints(
  constraints: readonly Constraint[] | undefined,
  labels: Readonly<Record<string, string>>,
): string[] {
  const out: string[] = [];
  for (const c of constraints ?? []) {
    if (matchesConstraint(c, labels)) continue;
    const v = own(labels, c.key);
    const actual = v === undefined ? `${c.key} unset` : `${c.key}=${quote(v)}`;
    out.push(`label: ${formatConstraint(c)} not satisfied (${actual})`);
  }
  return out;
}
