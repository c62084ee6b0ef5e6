#!/usr/bin/env node
import { resolve } from 'node:path';
// Runs a TypeScript file (argv[2]) through tsx with the libp2p polyfill loaded: `node node/bin/run-ts.js file.ts args…`.
import { pathToFileURL } from 'node:url';
import { register } from 'tsx/esm/api';

register();
await import('../../gossip/polyfill.ts');
const file = process.argv[2];
if (!file) {
  console.error('usage: run-ts.js <file.ts> [args…]');
  process.exit(2);
}
process.argv.splice(2, 1);
await import(pathToFileURL(resolve(file)).href);
