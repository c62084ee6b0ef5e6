export * from './codec.ts';
export { canonicalJson } from './hash.ts';
export * from './hosts.ts';
export * from './intents.ts';
export * from './patch.ts';
export * from './state.ts';
export * from './types.ts';
