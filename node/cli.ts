import { existsSync } from 'node:fs';
import { Command, Option } from 'commander';
import {
  formatAge,
  formatBytes,
  parseBytes,
  parseCpu,
  parseGpus,
  parseLabels,
  parseOverrides,
} from './host.ts';

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
      .choices(['docker', 'process', 'sim', 'auto'])
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
    // Fail fast on bad flags, before loading libp2p or touching the data dir.
    parseOverrides({
      cpu: opts.cpu,
      memory: opts.memory,
      disk: opts.disk,
      gpu: opts.gpu,
      labels: opts.label,
    });
    const { parseHostPort } = await import('./api.ts');
    parseHostPort(opts.api, '--api');
    const { runAgent } = await import('./run.ts');
    await runAgent(opts);
  });

program
  .command('keygen <file>')
  .description('write a new cluster key (libp2p swarm-key format) for --cluster-key')
  .option('--force', 'overwrite an existing file')
  .action(async (file: string, opts: { force?: boolean }) => {
    if (!opts.force && existsSync(file)) {
      throw new Error(`${file} already exists; refusing to overwrite a cluster key (use --force)`);
    }
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

/**
 * Call an agent's API. Errors are one readable line: unreachable agents name the address, API
 * errors carry the agent's message (which names the offending field).
 */
async function callApi(
  addr: string,
  path: string,
  init: { method?: string; body?: unknown } = {},
): Promise<unknown> {
  const base = /^https?:\/\//.test(addr) ? addr.replace(/\/+$/, '') : `http://${addr}`;
  let res: Response;
  try {
    res = await fetch(`${base}${path}`, {
      method: init.method ?? 'GET',
      headers: init.body === undefined ? {} : { 'content-type': 'application/json' },
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
      signal: AbortSignal.timeout(10_000),
    });
  } catch (err) {
    throw new Error(
      `cannot reach an agent at ${addr}: ${reason(err)} (is \`shoal agent\` running there? see --addr)`,
    );
  }
  const text = await res.text();
  let body: unknown;
  try {
    body = text === '' ? null : JSON.parse(text);
  } catch {
    throw new Error(`${addr}${path}: HTTP ${res.status}, not JSON: ${text.slice(0, 200)}`);
  }
  if (!res.ok) {
    const message = (body as { message?: unknown } | null)?.message;
    throw new Error(
      typeof message === 'string' ? message : `${addr}${path}: HTTP ${res.status}: ${text.slice(0, 200)}`,
    );
  }
  return body;
}

/** The innermost useful reason of a fetch failure (ECONNREFUSED 127.0.0.1:1, timeout, …). */
function reason(err: unknown): string {
  if (err instanceof Error && err.name === 'TimeoutError') return 'no answer within 10 s';
  const cause = err instanceof Error ? err.cause : undefined;
  if (cause instanceof Error) {
    const code = (cause as Error & { code?: unknown }).code;
    return typeof code === 'string' && !cause.message.includes(code)
      ? `${code} ${cause.message}`
      : cause.message;
  }
  return err instanceof Error ? err.message : String(err);
}

interface NodeRow {
  id: string;
  status: string;
  addrs: string[];
  capacity?: { cpuMilli?: number; memory?: number; gpus?: unknown[] } | null;
  allocated?: { cpuMilli?: number; memory?: number } | null;
  labels?: Record<string, string>;
  statusAgeMs?: number;
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
    const nodes = (await callApi(opts.addr, '/v1/nodes')) as NodeRow[];
    if (opts.json) {
      process.stdout.write(`${JSON.stringify(nodes, null, 2)}\n`);
      return;
    }
    process.stdout.write(`${formatNodes(nodes)}\n`);
  });

/** The `shoal nodes` table (also printed by `shoal node set` for the changed node). */
function formatNodes(nodes: NodeRow[]): string {
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
      n.statusAgeMs === undefined ? n.status : `${n.status} ${formatAge(n.statusAgeMs)}`,
      cpu,
      mem,
      String(n.capacity?.gpus?.length ?? 0),
      Object.entries(n.labels ?? {})
        .map(([k, v]) => `${k}=${v}`)
        .join(',') || '-',
      n.addrs[0] ?? '-',
    ]);
  }
  return formatTable(rows);
}

const node = program.command('node').description('this host as an agent advertises it');

node
  .command('set')
  .description('change what the agent at --addr advertises for its host (labels given replace the set)')
  .option(
    '--label <k=v>',
    'host label (repeatable; replaces all labels)',
    (v: string, prev: string[] = []) => [...prev, v],
  )
  .option('--clear-labels', 'remove all labels')
  .option('--cpu <cores>', 'CPU cores, e.g. 4 or 2.5')
  .option('--memory <size>', 'memory, e.g. 8GiB')
  .option('--disk <size>', 'disk, e.g. 500GiB')
  .option('--gpu <spec>', 'GPUs: none | 2xA100:80GiB,T4:16GiB')
  .addOption(addrOption())
  .option('--json', 'print JSON')
  .action(
    async (opts: {
      label?: string[];
      clearLabels?: boolean;
      cpu?: string;
      memory?: string;
      disk?: string;
      gpu?: string;
      addr: string;
      json?: boolean;
    }) => {
      // Check locally first so errors name the flags; the agent validates again.
      const body: Record<string, unknown> = {};
      if (opts.label && opts.clearLabels)
        throw new Error('--label and --clear-labels: give one or the other');
      if (opts.label) body.labels = parseLabels(opts.label, '--label');
      if (opts.clearLabels) body.labels = {};
      if (opts.cpu !== undefined) {
        parseCpu(opts.cpu, '--cpu');
        body.cpu = opts.cpu;
      }
      if (opts.memory !== undefined) {
        parseBytes(opts.memory, '--memory');
        body.memory = opts.memory;
      }
      if (opts.disk !== undefined) {
        parseBytes(opts.disk, '--disk');
        body.disk = opts.disk;
      }
      if (opts.gpu !== undefined) {
        parseGpus(opts.gpu, '--gpu');
        body.gpu = opts.gpu;
      }
      if (Object.keys(body).length === 0) {
        throw new Error('nothing to set: give --label, --clear-labels, --cpu, --memory, --disk or --gpu');
      }
      const n = (await callApi(opts.addr, '/v1/node', { method: 'PATCH', body })) as NodeRow;
      process.stdout.write(opts.json ? `${JSON.stringify(n, null, 2)}\n` : `${formatNodes([n])}\n`);
    },
  );

program
  .command('state')
  .description('cluster state summary and hash as one agent sees it')
  .addOption(addrOption())
  .action(async (opts: { addr: string }) => {
    process.stdout.write(`${JSON.stringify(await callApi(opts.addr, '/v1/state'), null, 2)}\n`);
  });

try {
  await program.parseAsync(process.argv);
} catch (err) {
  process.stderr.write(`shoal: ${(err as Error).message}\n`);
  process.exit(1);
}
