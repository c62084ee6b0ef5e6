/**
 * The cluster key: a libp2p private-network pre-shared key in the go-ipfs/kubo `swarm.key`
 * format, so the same file works with other libp2p tools:
 *
 *     /key/swarm/psk/1.0.0/
 *     /base16/
 *     <64 hex digits = 32 random bytes>
 *
 * With the key set, every connection is XSalsa20-encrypted with it before anything else is
 * exchanged (@libp2p/pnet); a peer without the same key cannot even complete the handshake.
 */
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { generateKey } from '@libp2p/pnet';

export const SWARM_KEY_BYTES = 32;
const HEADER = '/key/swarm/psk/1.0.0/';
const CODEC = '/base16/';
/** Length of the file `generateKey` writes: header, codec, 64 hex digits, two newlines. */
const ENCODED_LENGTH = HEADER.length + 1 + CODEC.length + 1 + SWARM_KEY_BYTES * 2;

export class SwarmKeyError extends Error {
  constructor(
    /** The file the key came from, when known. */
    readonly path: string | undefined,
    message: string,
  ) {
    super(path === undefined ? `invalid swarm key: ${message}` : `invalid swarm key in ${path}: ${message}`);
    this.name = 'SwarmKeyError';
  }
}

/** A fresh key in swarm-key file format (with a trailing newline). */
export function generateSwarmKey(): string {
  const buf = new Uint8Array(ENCODED_LENGTH);
  generateKey(buf);
  return `${new TextDecoder().decode(buf)}\n`;
}

/** Encode 32 key bytes in swarm-key file format (what @libp2p/pnet's `preSharedKey` expects). */
export function encodeSwarmKey(key: Uint8Array): string {
  if (key.byteLength !== SWARM_KEY_BYTES) {
    throw new SwarmKeyError(undefined, `expected ${SWARM_KEY_BYTES} key bytes, got ${key.byteLength}`);
  }
  return `${HEADER}\n${CODEC}\n${Buffer.from(key).toString('hex')}\n`;
}

/**
 * Parse a swarm-key file; returns the 32 key bytes. `path` only improves error messages.
 * Accepts LF or CRLF line ends and surrounding blank space (files edited by hand).
 */
export function parseSwarmKey(bytes: Uint8Array | string, path?: string): Uint8Array {
  const text = typeof bytes === 'string' ? bytes : new TextDecoder('utf-8', { fatal: false }).decode(bytes);
  const lines = text
    .trim()
    .split(/\r?\n/)
    .map((line) => line.trim());
  const [header, codec, hex, ...rest] = lines;
  if (header !== HEADER) {
    throw new SwarmKeyError(path, `first line must be "${HEADER}", found "${preview(header)}"`);
  }
  if (codec !== CODEC) {
    throw new SwarmKeyError(
      path,
      `second line must be "${CODEC}" (the only supported encoding), found "${preview(codec)}"`,
    );
  }
  if (hex === undefined || hex.length !== SWARM_KEY_BYTES * 2) {
    throw new SwarmKeyError(
      path,
      `third line must be ${SWARM_KEY_BYTES * 2} hex digits (${SWARM_KEY_BYTES} bytes), found ${hex?.length ?? 0} characters`,
    );
  }
  if (!/^[0-9a-fA-F]+$/.test(hex)) {
    throw new SwarmKeyError(path, 'third line contains characters that are not hex digits');
  }
  if (rest.some((line) => line.length > 0)) {
    throw new SwarmKeyError(path, 'unexpected content after the key line');
  }
  return new Uint8Array(Buffer.from(hex, 'hex'));
}

/** Read and parse the swarm-key file at `path` (errors name the file). */
export function loadSwarmKey(path: string): Uint8Array {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    throw new SwarmKeyError(
      path,
      `cannot read the file: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
  return parseSwarmKey(bytes, path);
}

export interface WriteSwarmKeyOptions {
  /** Replace an existing file. Off by default: overwriting a cluster key cuts this host off. */
  force?: boolean;
}

/** `shoal keygen <file>`: write a fresh swarm key (mode 0600). Returns the key bytes. */
export function writeSwarmKeyFile(path: string, options: WriteSwarmKeyOptions = {}): Uint8Array {
  const encoded = generateSwarmKey();
  if (options.force === true) {
    writeFileSync(path, encoded, { mode: 0o600 });
    chmodSync(path, 0o600); // `mode` only applies when the file is created
  } else {
    if (existsSync(path)) {
      throw new SwarmKeyError(
        path,
        'the file already exists; refusing to overwrite a cluster key (use --force)',
      );
    }
    // 'wx' (O_EXCL) closes the race between the check above and the write.
    writeFileSync(path, encoded, { mode: 0o600, flag: 'wx' });
  }
  return parseSwarmKey(encoded, path);
}

function preview(line: string | undefined): string {
  if (line === undefined) return '';
  return line.length > 40 ? `${line.slice(0, 40)}…` : line;
}
