import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClusterProcs, waitFor } from './cluster-procs.ts';

/**
 * An agent on the process engine (the embedded default for hosts without Docker): a deploy runs
 * as supervised local processes; kill -9 of the agent leaves them running, and the restarted agent
 * re-adopts them — same pids, no duplicates, books = what runs.
 */
interface Proc {
  id: string;
  pid: number;
}

describe('an agent on the process engine', { timeout: 90_000 }, () => {
  const c = new ClusterProcs({ prefix: 'shoal-proc-' });

  beforeAll(async () => {
    await c.spawn({ extraArgs: ['--cpu', '4', '--memory', '8GiB', '--engine', 'process'] });
  }, 60_000);

  afterAll(async () => {
    await c.stopAll();
  });

  /** Pids of this deploy's workload processes, from the engine's own records in the data dir. */
  const pids = (): Proc[] => {
    const dir = `${c.get(0).dataDir}/process`;
    const out: Proc[] = [];
    for (let r = 0; r < 3; r++) {
      try {
        const pid = Number(readFileSync(`${dir}/job.${r}/child.pid`, 'utf8'));
        process.kill(pid, 0); // alive?
        out.push({ id: `job.${r}`, pid });
      } catch {
        // not (yet) running
      }
    }
    return out;
  };

  it('runs the replicas as processes, re-adopts them after kill -9 of the agent', async () => {
    await c.http(0, 'POST', '/v1/deploys', {
      id: 'job',
      name: 'job',
      replicas: 3,
      spec: { resources: { cpu: { milli: 100 }, memoryBytes: 32 * 2 ** 20 }, command: ['sleep', '600'] },
    });
    await waitFor(() => pids().length === 3, 20_000, 100);
    const before = pids();
    await c.kill(0, 'SIGKILL');
    expect(pids()).toEqual(before); // the workloads outlive the agent
    await c.restart(0);
    await new Promise((r) => setTimeout(r, 4_000)); // a few reconcile passes
    expect(pids()).toEqual(before); // same processes: adopted, not restarted or duplicated
    const me = (await c.nodes(0)).find((n) => n.self)!;
    const alloc = me.allocated as { cpuMilli: number; memory: number };
    expect(alloc.cpuMilli).toBe(300);
    expect(alloc.memory).toBe(3 * 32 * 2 ** 20);
    await c.http(0, 'DELETE', '/v1/deploys/job').catch(() => undefined);
    await waitFor(() => pids().length === 0, 20_000, 100);
  });
});
