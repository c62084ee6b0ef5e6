import { parentPort } from 'node:worker_threads';
import { fuzzOne } from './fuzz.ts';
import { planProbe } from './plan.ts';

/** Worker side of sim/pool.ts: runs whole simulations (fuzz seeds, plan probes) one at a time. */

export type Job =
  | { kind: 'fuzz'; seed: number }
  | { kind: 'plan'; file: string; hosts: number; seed: number };

parentPort?.on('message', async (msg: { id: number; job: Job }) => {
  try {
    const result =
      msg.job.kind === 'fuzz'
        ? await fuzzOne(msg.job.seed)
        : await planProbe(msg.job.file, msg.job.hosts, msg.job.seed);
    parentPort!.postMessage({ id: msg.id, result });
  } catch (err) {
    parentPort!.postMessage({ id: msg.id, error: (err as Error).stack ?? String(err) });
  }
});
