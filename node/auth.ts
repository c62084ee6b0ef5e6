import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

/**
 * Bearer-token auth of the HTTP API.
 *
 * Every agent has a token: by default a random one made on first start and kept in
 * `<data-dir>/token` (mode 0600) so it survives restarts; `shoal agent --token-file <path>` uses an
 * operator-provided file instead (give every agent the same file and one token works against any
 * agent). Every route requires `Authorization: Bearer <token>` unless it is registered with
 * `config: { public: true }` (GET /v1/health, GET /v1/openapi.json, and GET /metrics unless
 * `--metrics-auth`). Requests for unknown routes also need the token (no route discovery without it).
 */

/** Where the agent keeps its generated token inside its data dir. */
export const TOKEN_FILE_NAME = 'token';

/** Tokens shorter than this are refused (an operator's --token-file included). */
export const MIN_TOKEN_LENGTH = 16;

export class TokenFileError extends Error {
  constructor(
    readonly field: string,
    problem: string,
  ) {
    super(`${field}: ${problem}`);
    this.name = 'TokenFileError';
  }
}

/** A new random token: 32 bytes from the OS, base64url (43 characters). */
export function newToken(): string {
  return randomBytes(32).toString('base64url');
}

/** Read a token file: first line, trimmed; must be at least MIN_TOKEN_LENGTH printable characters. */
export function readTokenFile(path: string, field = '--token-file'): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new TokenFileError(field, `cannot read ${path}${code ? ` (${code})` : ''}`);
  }
  const token = (text.split('\n')[0] ?? '').trim();
  if (token.length < MIN_TOKEN_LENGTH) {
    throw new TokenFileError(
      field,
      `${path} holds no token of at least ${MIN_TOKEN_LENGTH} characters on its first line`,
    );
  }
  if (!/^[\x21-\x7e]+$/.test(token)) {
    throw new TokenFileError(field, `${path}: the token must be printable ASCII without spaces`);
  }
  return token;
}

export interface AgentToken {
  token: string;
  /** The file it came from. */
  path: string;
  /** True when this start made the token (first start of this data dir). */
  created: boolean;
  /** Set when the file is readable by group or others (the agent tightens its own file to 0600). */
  warning?: string;
}

/**
 * The agent's token: `tokenFile` when given, else `<dataDir>/token`, made (0600) on first start.
 * The data dir must exist.
 */
export function loadOrCreateToken(dataDir: string, tokenFile?: string): AgentToken {
  if (tokenFile !== undefined) {
    const token = readTokenFile(tokenFile, '--token-file');
    const mode = statSync(tokenFile).mode & 0o777;
    const warning =
      (mode & 0o077) !== 0
        ? `${tokenFile} is readable by group/others (mode ${mode.toString(8)}); chmod 600 it`
        : undefined;
    return { token, path: tokenFile, created: false, ...(warning ? { warning } : {}) };
  }
  const path = join(dataDir, TOKEN_FILE_NAME);
  if (existsSync(path)) {
    const token = readTokenFile(path, `${path}`);
    let warning: string | undefined;
    if ((statSync(path).mode & 0o077) !== 0) {
      chmodSync(path, 0o600);
      warning = `${path} was readable by group/others; changed its mode to 600`;
    }
    return { token, path, created: false, ...(warning ? { warning } : {}) };
  }
  const token = newToken();
  // 'wx': never clobber a token another process wrote meanwhile.
  writeFileSync(path, `${token}\n`, { mode: 0o600, flag: 'wx' });
  return { token, path, created: true };
}

/** Constant-time comparison (both sides hashed first, so the length does not leak either). */
export function tokensEqual(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

/** The token of an `Authorization: Bearer <token>` header, or undefined. */
export function bearerToken(header: string | string[] | undefined): string | undefined {
  if (typeof header !== 'string') return undefined;
  const m = /^Bearer[ ]+(\S+)\s*$/i.exec(header);
  return m?.[1];
}

export interface AuthOptions {
  /** The token every protected request must carry. */
  token: string;
}

/** Route config flag: `{ config: { public: true } }` opens a route to callers without a token. */
export interface PublicRouteConfig {
  public?: boolean;
}

function unauthorized(reply: FastifyReply, problem: 'missing' | 'invalid'): FastifyReply {
  const message =
    problem === 'missing'
      ? 'missing bearer token: send "Authorization: Bearer <token>" (the agent keeps its token in <data-dir>/token; the CLI takes --token or SHOAL_TOKEN)'
      : 'invalid bearer token (the agent keeps its token in <data-dir>/token, or the file given with --token-file)';
  return reply
    .code(401)
    .header(
      'www-authenticate',
      problem === 'missing' ? 'Bearer realm="shoal"' : 'Bearer realm="shoal", error="invalid_token"',
    )
    .send({ error: 'unauthorized', message });
}

/**
 * Require the token on every route of `app` not marked public. Call before registering routes
 * (an onRequest hook applies to routes registered after it in the same encapsulation context).
 */
export function registerAuth(app: FastifyInstance, opts: AuthOptions): void {
  app.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    const config = req.routeOptions.config as PublicRouteConfig | undefined;
    // The 404 handler has no route config: unknown routes need the token too.
    if (config?.public === true && req.is404 !== true) return;
    const given = bearerToken(req.headers.authorization);
    if (given === undefined) return unauthorized(reply, 'missing');
    if (!tokensEqual(given, opts.token)) return unauthorized(reply, 'invalid');
  });
}
