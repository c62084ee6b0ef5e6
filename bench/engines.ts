import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchEngineOps, type EngineOpsResult } from '../engines/bench-ops.ts';
import { DockerEngine } from '../engines/docker.ts';
import { ProcessEngine } from '../engines/process.ts';
import type { Bench } from './stats.ts';

/**
 * Engine operation latencies (create/start/inspect/list/stop/remove), docker and process, N
 * sequential workloads each. Docker needs scripts/docker-up.sh (the socket from
 * $SHOAL_DOCKER_SOCKET or /tmp/shoal-docker/docker.sock); without it that part reports an error.
 */
export const bench: Bench = {
  name: 'engines',
  description: 'engine op latencies (create/start/stop/remove…) for docker and process: median/p99 ms',
  async run(args) {
    const n = Number(args[args.indexOf('--n') + 1]) || 20;
    const out: Record<string, EngineOpsResult | { error: string }> = {};
    const print = (r: EngineOpsResult) => {
      process.stdout.write(`${r.engine} (n=${r.n}):\n`);
      for (const [op, s] of Object.entries(r.ops)) {
        process.stdout.write(
          `  ${op.padEnd(8)} median ${String(s.median).padStart(8)} ms   p99 ${String(s.p99).padStart(8)} ms\n`,
        );
      }
    };
    const docker = new DockerEngine({ hostId: 'bench-docker' });
    try {
      await docker.ping();
      const r = await benchEngineOps(docker, { n });
      print(r);
      out.docker = r;
    } catch (err) {
      out.docker = { error: (err as Error).message };
      process.stdout.write(`docker: ${(err as Error).message}\n`);
    } finally {
      await docker.close();
    }
    const dir = mkdtempSync(join(tmpdir(), 'shoal-bench-proc-'));
    const proc = new ProcessEngine({ hostId: 'bench-process', dataDir: dir });
    try {
      const r = await benchEngineOps(proc, { n });
      print(r);
      out.process = r;
    } finally {
      await proc.close();
      rmSync(dir, { recursive: true, force: true });
    }
    return out;
  },
};
