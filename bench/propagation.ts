import type { Bench } from './index.ts';

export const bench: Bench = {
  name: 'propagation',
  description: 'capacity change → all of N real agent processes (N=5,10): p50/p99; dead-detection time',
  async run() {
    throw new Error('not implemented yet');
  },
};
