#!/usr/bin/env node
// Entry for `npx shoal`: runs the TypeScript sources directly through tsx (no build step).
import { register } from 'tsx/esm/api';

register();
await import('../../gossip/polyfill.ts');
await import('../cli.ts');
