import { Command, Option } from 'commander';
import { formatBytes } from './host.ts';

/**
 * `shoal` command line. Every flag of `shoal agent` has a SHOAL_* environment twin
 * (e.g. --data-dir ↔ SHOAL_DATA_DIR; repeatable flags take comma-separated env values).
 */

const program = new Command();
program
  .name('shoal')
  .description('A container orchestrator with no master: run one agent per host, deploy to any of them.')
  .version('0.1.0')
  .showHelpAfterError();

function env(name: string): string {
  return `SHOAL_${name}`;
}

function collect(value: string, previous: string[] | undefined): string[] {
  // A flag given on the command line replaces the env default rather than appending to it.
  const base = previous && (previous as string[] & { fromCli?: boolean }).fromCli ? previous : [];
  const out = [...base, ...value.split(',').filter(Boolean)] as string[] & { fromCli?: boolean };
  out.fromCli = true;
  return out;
}

program
  .command('agent')
  .description('run the agent for this host (joins the cluster, serves the API)')
  .addOption(
    new Option('--data-dir <dir>', 'identity, state and logs').env(env('DATA_DIR')).default('.data/agent'),
  )
  .addOption(
    new Option('--listen <multiaddr>', 'libp2p listen address (repeatable)')
      .env(env('LISTEN'))
      .argParser(collect)
      .default(['/ip4/0.0.0.0/tcp/4701']),
  )
  .addOption(new Option('--api <host:port>', 'HTTP API address').env(env('API')).default('127.0.0.1:4700'))
  .addOption(
    new Option('--join <multiaddr>', 'address of any live member (repeatable)')
      .env(env('JOIN'))
      .argParser(collect)
      .default([]),
  )
  .addOption(
    new Option('--cluster-key <file>', 'pre-shared cluster key (shoal keygen)').env(env('CLUSTER_KEY')),
  )
  .addOption(
    new Option('--engine <engine>', 'workload engine')
      .choices(['docker', 'process', 'auto'])
      .env(env('ENGINE'))
      .default('auto'),
  )
  .addOption(new Option('--docker-socket <path>', 'Docker engine socket').env(env('DOCKER_SOCKET')))
  .addOption(new Option('--cpu <cores>', 'override detected CPU cores (e.g. 4 or 2.5)').env(env('CPU')))
  .addOption(new Option('--memory <size>', 'override detected memory (e.g. 8GiB)').env(env('MEMORY')))
  .addOption(new Option('--disk <size>', 'override detected disk of the data dir').env(env('DISK')))
  .addOption(new Option('--gpu <spec>', 'override GPUs: none | 2xA100:80GiB,T4:16GiB').env(env('GPU')))
  .addOption(
    new Option('--label <k=v>', 'host label, e.g. zone=a (repeatable)')
      .env(env('LABEL'))
      .argParser(collect)
      .default([]),
  )
  .addOption(
    new Option('--log-level <level>', 'log level')
      .choices(['trace', 'debug', 'info', 'warn', 'error'])
      .env(env('LOG_LEVEL'))
      .default('info'),
  )
  .action(async (opts) => {
    const { runAgent } = await import('./run.ts');
    await runAgent(opts);
  });

program
  .command('keygen <file>')
  .description('write a new cluster key (libp2p swarm-key format) for --cluster-key')
  .option('--force', 'overwrite an existing file')
  .action(async (file: string, opts: { force?: boolean }) => {
    const { writeSwarmKeyFile } = await import('../gossip/swarm-key.ts');
    await writeSwarmKeyFile(file, { force: !!opts.force });
    process.stdout.write(
      `wrote cluster key to ${file} (keep it secret; give it to every agent with --cluster-key)\n`,
    );
  });

function addrOption(): Option {
  return new Option('--addr <host:port>', 'any agent’s API address')
    .env(env('ADDR'))
    .default('127.0.0.1:4700');
}

async function getJson(addr: string, path: string): Promise<unknown> {
  const base = addr.startsWith('http') ? addr : `http://${addr}`;
  let res: Response;
  try {
    res = await fetch(`${base}${path}`, { signal: AbortSignal.timeout(10_000) });
  } catch (err) {
    throw new Error(`cannot reach an agent at ${addr}: ${(err as Error).cause ?? (err as Error).message}`);
  }
  const body = await res.text();
  if (!res.ok) throw new Error(`${addr}${path}: HTTP ${res.status}: ${body}`);
  return JSON.parse(body);
}

interface NodeRow {
  id: string;
  status: string;
  addrs: string[];
  capacity?: { cpuMilli?: number; memory?: number; gpus?: unknown[] } | null;
  allocated?: { cpuMilli?: number; memory?: number } | null;
  labels?: Record<string, string>;
  self?: boolean;
}

export function formatTable(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

program
  .command('nodes')
  .description('list cluster members as one agent sees them')
  .addOption(addrOption())
  .option('--json', 'print JSON')
  .action(async (opts: { addr: string; json?: boolean }) => {
    const nodes = (await getJson(opts.addr, '/v1/nodes')) as NodeRow[];
    if (opts.json) {
      process.stdout.write(`${JSON.stringify(nodes, null, 2)}\n`);
      return;
    }
    const rows = [['ID', 'STATUS', 'CPU', 'MEMORY', 'GPUS', 'LABELS', 'ADDRESS']];
    for (const n of nodes) {
      const cpu =
        n.capacity?.cpuMilli !== undefined
          ? `${(n.allocated?.cpuMilli ?? 0) / 1000}/${n.capacity.cpuMilli / 1000}`
          : '-';
      const mem =
        n.capacity?.memory !== undefined
          ? `${formatBytes(n.allocated?.memory ?? 0)}/${formatBytes(n.capacity.memory)}`
          : '-';
      rows.push([
        `${n.id}${n.self ? ' *' : ''}`,
        n.status,
        cpu,
        mem,
        String(n.capacity?.gpus?.length ?? 0),
        Object.entries(n.labels ?? {})
          .map(([k, v]) => `${k}=${v}`)
          .join(',') || '-',
        n.addrs[0] ?? '-',
      ]);
    }
    process.stdout.write(`${formatTable(rows)}\n`);
  });

program
  .command('state')
  .description('cluster state summary and hash as one agent sees it')
  .addOption(addrOption())
  .action(async (opts: { addr: string }) => {
    process.stdout.write(`${JSON.stringify(await getJson(opts.addr, '/v1/state'), null, 2)}\n`);
  });

try {
  await program.parseAsync(process.argv);
} catch (err) {
  process.stderr.write(`shoal: ${(err as Error).message}\n`);
  process.exit(1);
}
