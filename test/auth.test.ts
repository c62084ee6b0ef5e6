import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildApi } from '../node/api.ts';
import { bearerToken, loadOrCreateToken, readTokenFile, TokenFileError, tokensEqual } from '../node/auth.ts';
import { tinyBackend, tinyDeploys } from './api-fixtures.ts';

const dir = mkdtempSync(join(tmpdir(), 'shoal-auth-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('agent token file', () => {
  it('is made on first start with mode 0600 and kept across restarts', () => {
    const data = mkdtempSync(join(dir, 'data-'));
    const first = loadOrCreateToken(data);
    expect(first.created).toBe(true);
    expect(first.path).toBe(join(data, 'token'));
    expect(first.token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(statSync(first.path).mode & 0o777).toBe(0o600);
    expect(readFileSync(first.path, 'utf8')).toBe(`${first.token}\n`);
    const again = loadOrCreateToken(data);
    expect(again).toEqual({ token: first.token, path: first.path, created: false });
    // Another data dir, another token.
    expect(loadOrCreateToken(mkdtempSync(join(dir, 'data-'))).token).not.toBe(first.token);
  });

  it('tightens a token file readable by others to 0600, with a warning', () => {
    const data = mkdtempSync(join(dir, 'data-'));
    const t = loadOrCreateToken(data);
    chmodSync(t.path, 0o644);
    const again = loadOrCreateToken(data);
    expect(again.token).toBe(t.token);
    expect(again.warning).toMatch(/readable by group\/others; changed its mode to 600/);
    expect(statSync(t.path).mode & 0o777).toBe(0o600);
  });

  it('--token-file: uses the operator file (first line, trimmed) and leaves the data dir alone', () => {
    const data = mkdtempSync(join(dir, 'data-'));
    const file = join(dir, 'shared.token');
    writeFileSync(file, '  s3cret-shared-token-0123456789  \n# comment\n', { mode: 0o600 });
    const t = loadOrCreateToken(data, file);
    expect(t).toEqual({ token: 's3cret-shared-token-0123456789', path: file, created: false });
    expect(() => statSync(join(data, 'token'))).toThrow();
  });

  it('--token-file: errors name the flag (missing, empty, too short, spaces)', () => {
    expect(() => readTokenFile(join(dir, 'nope'))).toThrow(/^--token-file: cannot read .*nope \(ENOENT\)$/);
    const f = join(dir, 'bad.token');
    for (const [text, msg] of [
      ['', /holds no token of at least 16 characters/],
      ['short\n', /holds no token of at least 16 characters/],
      ['has a space in the token value\n', /printable ASCII without spaces/],
    ] as const) {
      writeFileSync(f, text);
      expect(() => readTokenFile(f)).toThrow(TokenFileError);
      expect(() => readTokenFile(f)).toThrow(msg);
    }
  });

  it('compares in constant time and parses the Bearer header', () => {
    expect(tokensEqual('abc', 'abc')).toBe(true);
    expect(tokensEqual('abc', 'abd')).toBe(false);
    expect(tokensEqual('abc', 'abcd')).toBe(false);
    expect(tokensEqual('', 'abc')).toBe(false);
    expect(bearerToken('Bearer xyz')).toBe('xyz');
    expect(bearerToken('bearer   xyz ')).toBe('xyz');
    expect(bearerToken('Basic xyz')).toBeUndefined();
    expect(bearerToken('Bearer')).toBeUndefined();
    expect(bearerToken(undefined)).toBeUndefined();
  });
});

describe('API auth', () => {
  const token = 'test-token-0123456789abcdef';
  const app = buildApi(tinyBackend(), { token, deploys: tinyDeploys() });
  const strict = buildApi(tinyBackend(), { token, metricsAuth: true });
  afterAll(async () => {
    await app.close();
    await strict.close();
  });
  const bearer = (t: string) => ({ authorization: `Bearer ${t}` });

  it.each([
    ['GET', '/v1/nodes'],
    ['GET', '/v1/nodes/node-self'],
    ['GET', '/v1/state'],
    ['PATCH', '/v1/node'],
    ['GET', '/v1/deploys'],
    ['POST', '/v1/deploys'],
    ['DELETE', '/v1/deploys/x'],
    ['GET', '/v1/no-such-route'],
  ] as const)('%s %s without a token → 401 with a JSON error and WWW-Authenticate', async (method, url) => {
    const res = await app.inject({ method, url });
    expect(res.statusCode).toBe(401);
    expect(res.headers['www-authenticate']).toBe('Bearer realm="shoal"');
    expect(res.json()).toMatchObject({
      error: 'unauthorized',
      message: expect.stringMatching(/^missing bearer token/),
    });
  });

  it('a wrong token → 401 invalid_token; a non-Bearer scheme counts as missing', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/nodes', headers: bearer(`${token}x`) });
    expect(res.statusCode).toBe(401);
    expect(res.headers['www-authenticate']).toBe('Bearer realm="shoal", error="invalid_token"');
    expect(res.json()).toMatchObject({
      error: 'unauthorized',
      message: expect.stringMatching(/^invalid bearer token/),
    });
    const basic = await app.inject({
      method: 'GET',
      url: '/v1/nodes',
      headers: { authorization: `Basic ${token}` },
    });
    expect(basic.statusCode).toBe(401);
  });

  it('the right token passes (and an unknown route is then a 404)', async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/nodes', headers: bearer(token) });
    expect(res.statusCode).toBe(200);
    expect((res.json() as unknown[]).length).toBe(1);
    const missing = await app.inject({ method: 'GET', url: '/v1/no-such-route', headers: bearer(token) });
    expect(missing.statusCode).toBe(404);
  });

  it('GET /v1/health and GET /v1/openapi.json are open; a token is not needed', async () => {
    expect((await app.inject({ method: 'GET', url: '/v1/health' })).statusCode).toBe(200);
    expect((await app.inject({ method: 'GET', url: '/v1/openapi.json' })).statusCode).toBe(200);
    // Open means open: a wrong token does not turn them into 401s either.
    expect(
      (await app.inject({ method: 'GET', url: '/v1/health', headers: bearer('wrong') })).statusCode,
    ).toBe(200);
  });

  it('GET /metrics is open by default and needs the token with metricsAuth', async () => {
    expect((await app.inject({ method: 'GET', url: '/metrics' })).statusCode).toBe(200);
    expect((await strict.inject({ method: 'GET', url: '/metrics' })).statusCode).toBe(401);
    expect((await strict.inject({ method: 'GET', url: '/metrics', headers: bearer(token) })).statusCode).toBe(
      200,
    );
    expect((await strict.inject({ method: 'GET', url: '/v1/health' })).statusCode).toBe(200);
  });
});
