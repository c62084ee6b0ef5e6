import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { basename, extname } from 'node:path';
import { MultiBar, Presets } from 'cli-progress';
import { Command, CommanderError, Option } from 'commander';
import { stringify as stringifyYaml } from 'yaml';
import { registerSimCommands } from '../sim/cli.ts';
import {
  formatHistory,
  formatPs,
  formatTable,
  parseCount,
  parseDuration,
  parseEnvPairs,
  parseSeconds,
  parseSince,
  parseTarget,
  pickWorkloads,
  progressOf,
  shortId,
  UsageError,
} from './cli-format.ts';
import {
  type DeployView,
  type ExecResult,
  type JobStatus,
  type LogLine,
  resolveToken,
  ShoalClient,
  type WorkloadView,
} from './client.ts';
import {
  formatAge,
  formatBytes,
  parseBytes,
  parseCpu,
  parseGpus,
  parseLabels,
  parseOverrides,
} from './host.ts';
import { parseCompose, SpecError } from './spec/compose.ts';

/**
 * `shoal` command line. Every flag of `shoal agent` has a SHOAL_* environment twin
 * (e.g. --data-dir ↔ SHOAL_DATA_DIR; repeatable flags take comma-separated env values).
 * Commands that talk to an agent take --addr (SHOAL_ADDR), --token (SHOAL_TOKEN; default: the
 * local agent's <data-dir>/token) and --json (machine-readable output only, on stdout).
 * Exit codes: 0 ok, 1 error (the agent's message is printed), 2 malformed command line; `exec`
 * and `run` exit with the remote command's code.
 */

const program = new Command();
program
  .name('shoal')
  .description('A container orchestrator with no master: run one agent per host, deploy to any of them.')
  .version('0.1.0')
  .showHelpAfterError()
  // Parse errors throw (→ exit 2) instead of exiting; subcommands inherit this.
  .exitOverride();

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
    new Option('--token-file <path>', 'API token file (default: <data-dir>/token, made on first start)').env(
      env('TOKEN_FILE'),
    ),
  )
  .addOption(
    new Option('--metrics-auth', 'require the API token on GET /metrics too').env(env('METRICS_AUTH')),
  )
  .addOption(
    new Option(
      '--publish-gap-ms <ms>',
      'pace state publishes: at most one per this window, changes meanwhile go together (0: each at once)',
    )
      .env(env('PUBLISH_GAP_MS'))
      .default('0'),
  )
  .addOption(
    new Option(
      '--direct-awards <on|off>',
      'award deploys whose allocation is amounts only (no bound cores, GPU or volumes) from the gossiped view, without a bid exchange; off: always auction',
    )
      .choices(['on', 'off'])
      .env(env('DIRECT_AWARDS'))
      .default('on'),
  )
  .addOption(
    new Option(
      '--tombstone-ttl <duration>',
      'forget deleted deploys and removed hosts this long after the delete (0s: never); longer than any downtime an agent may come back from',
    )
      .env(env('TOMBSTONE_TTL'))
      .default('7d'),
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
    const gap = Number(opts.publishGapMs);
    if (!/^\d+$/.test(String(opts.publishGapMs)) || gap > 10_000)
      throw new Error(
        `--publish-gap-ms: expected whole milliseconds from 0 to 10000, got ${JSON.stringify(opts.publishGapMs)}`,
      );
    const ttl = parseDuration(String(opts.tombstoneTtl), '--tombstone-ttl');
    if (ttl !== 0 && ttl < 3_600_000)
      throw new Error(
        `--tombstone-ttl: expected 0s (never) or at least 1h (longer than any downtime an agent may come back from), got ${JSON.stringify(opts.tombstoneTtl)}`,
      );
    if (opts.tokenFile !== undefined) {
      const { readTokenFile } = await import('./auth.ts');
      readTokenFile(opts.tokenFile, '--token-file');
    }
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

// ───────────────────────────── talking to an agent ─────────────────────────────

interface ClientFlags {
  addr: string;
  token?: string;
  dataDir?: string;
  json?: boolean;
}

/** --addr, --token, --data-dir and --json: every command that talks to an agent takes them. */
function clientCommand(name: string, description: string): Command {
  return program
    .command(name)
    .description(description)
    .addOption(
      new Option('--addr <host:port>', 'any agent’s API address').env(env('ADDR')).default('127.0.0.1:4700'),
    )
    .addOption(
      new Option('--token <token>', 'API token (default: <data-dir>/token of a local agent)').env(
        env('TOKEN'),
      ),
    )
    .addOption(
      new Option('--data-dir <dir>', 'local agent data dir to read the token from')
        .env(env('DATA_DIR'))
        .default('.data/agent'),
    )
    .option('--json', 'machine-readable output only, on stdout');
}

function clientOf(flags: ClientFlags): ShoalClient {
  return new ShoalClient({ addr: flags.addr, token: resolveToken(flags) });
}

function printJson(v: unknown): void {
  process.stdout.write(`${JSON.stringify(v, null, 2)}\n`);
}

/** Args after a literal `--` on the command line (commander passes them as operands). */
function argsAfterDashDash(): string[] | undefined {
  const i = process.argv.indexOf('--');
  return i < 0 ? undefined : process.argv.slice(i + 1);
}

/** Exit code of the action (commands that mirror a remote exit code set it). */
let exitCode = 0;

interface NodeRow {
  id: string;
  status: string;
  addrs: string[];
  capacity?: { cpuMilli?: number; memory?: number; gpus?: unknown[] } | null;
  allocated?: { cpuMilli?: number; memory?: number } | null;
  labels?: Record<string, string>;
  statusAgeMs?: number;
  self?: boolean;
  draining?: boolean;
}

clientCommand('nodes', 'list cluster members as one agent sees them').action(async (opts: ClientFlags) => {
  const nodes = await clientOf(opts).request<NodeRow[]>('GET', '/v1/nodes');
  if (opts.json) printJson(nodes);
  else process.stdout.write(`${formatNodes(nodes)}\n`);
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
    const status = n.statusAgeMs === undefined ? n.status : `${n.status} ${formatAge(n.statusAgeMs)}`;
    rows.push([
      `${n.id}${n.self ? ' *' : ''}`,
      n.draining ? `${status} draining` : status,
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
  .addOption(
    new Option('--addr <host:port>', 'any agent’s API address').env(env('ADDR')).default('127.0.0.1:4700'),
  )
  .addOption(new Option('--token <token>', 'API token (default: <data-dir>/token)').env(env('TOKEN')))
  .addOption(
    new Option('--data-dir <dir>', 'local agent data dir').env(env('DATA_DIR')).default('.data/agent'),
  )
  .option('--json', 'print JSON')
  .action(
    async (
      opts: ClientFlags & {
        label?: string[];
        clearLabels?: boolean;
        cpu?: string;
        memory?: string;
        disk?: string;
        gpu?: string;
      },
    ) => {
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
      const n = await clientOf(opts).request<NodeRow>('PATCH', '/v1/node', { body });
      if (opts.json) printJson(n);
      else process.stdout.write(`${formatNodes([n])}\n`);
    },
  );

clientCommand('state', 'cluster state summary and hash as one agent sees it').action(
  async (opts: ClientFlags) => {
    printJson(await clientOf(opts).request('GET', '/v1/state'));
  },
);

// ───────────────────────────── deploys ─────────────────────────────

interface SubmitAnswer {
  deploys: DeployView[];
  warnings: string[];
}

/** POST /v1/deploys answers `{deploys, warnings}`; agents before Compose support answer one view. */
function submitAnswer(v: unknown): SubmitAnswer {
  const o = (v ?? {}) as Partial<SubmitAnswer> & Partial<DeployView>;
  if (Array.isArray(o.deploys)) return { deploys: o.deploys, warnings: o.warnings ?? [] };
  if (typeof o.id === 'string') return { deploys: [o as DeployView], warnings: [] };
  throw new Error(`unexpected answer from the agent: ${JSON.stringify(v).slice(0, 200)}`);
}

/**
 * Submit a spec file: a Compose file is parsed here, with the user's environment for `${VAR}`
 * interpolation (the agent never sees it), and each service is POSTed as a JSON intent; errors
 * name the file, service and field before anything is sent. A JSON file is sent as it is.
 * `pick` keeps only the service of one deploy (update --file).
 */
async function submitSpecFile(
  client: ShoalClient,
  path: '/v1/deploys' | '/v1/jobs',
  file: string,
  project: string | undefined,
  pick?: string,
): Promise<SubmitAnswer> {
  const raw = fileBody(file, '<file>');
  if (raw.contentType === 'application/json') {
    const body = JSON.parse(raw.text) as Record<string, unknown>;
    if (pick !== undefined) body.id = pick;
    return submitAnswer(await client.request('POST', path, { body }));
  }
  let parsed: ReturnType<typeof parseCompose>;
  try {
    parsed = parseCompose(raw.text, {
      file: basename(file),
      env: process.env as Record<string, string>,
      ...(project ? { project } : {}),
    });
  } catch (err) {
    if (err instanceof SpecError) throw new Error(err.message);
    throw err;
  }
  let deploys = parsed.deploys;
  if (pick !== undefined) {
    const match = deploys.filter((d) => d.id === pick);
    if (match.length === 0 && deploys.length !== 1)
      throw new Error(
        `${basename(file)}: no service for deploy ${pick} (services: ${deploys.map((d) => d.id).join(', ')})`,
      );
    deploys = (match.length > 0 ? match : deploys).map((d) => ({ ...d, id: pick }));
  }
  const views: DeployView[] = [];
  for (const d of deploys) {
    const body =
      path === '/v1/jobs'
        ? { name: d.name, replicas: d.replicas, strategy: d.strategy, spec: d.spec }
        : { id: d.id, name: d.name, replicas: d.replicas, strategy: d.strategy, spec: d.spec };
    views.push(...submitAnswer(await client.request('POST', path, { body })).deploys);
  }
  return { deploys: views, warnings: parsed.warnings };
}

/** A spec file as a request body: JSON files as JSON (the intent form), anything else as YAML (Compose). */
function fileBody(file: string, field: string): { contentType: string; text: string } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`${field}: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  if (extname(file).toLowerCase() === '.json') {
    try {
      JSON.parse(text);
    } catch (err) {
      throw new Error(`${file}: not valid JSON: ${(err as Error).message}`);
    }
    return { contentType: 'application/json', text };
  }
  return { contentType: 'application/yaml', text };
}

interface WaitFlags {
  timeout: string;
  json?: boolean;
}

/**
 * Poll GET /v1/deploys/:id until each deploy is done (every replica running, healthy when
 * checked, rollout finished) or failed, or the timeout passes. Progress goes to stderr (bars on a
 * terminal, a line per change otherwise; nothing with --json). Resolves with the last views;
 * sets exit code 1 when one failed or the wait timed out.
 */
async function waitForDeploys(client: ShoalClient, ids: string[], flags: WaitFlags): Promise<DeployView[]> {
  const timeoutMs = parseSeconds(flags.timeout, '--timeout');
  const deadline = timeoutMs === 0 ? Number.POSITIVE_INFINITY : performance.now() + timeoutMs;
  const quiet = flags.json === true;
  const tty = process.stderr.isTTY === true && !quiet;
  const bars = tty
    ? new MultiBar(
        {
          format: ' {bar} {value}/{total} {text}',
          hideCursor: true,
          clearOnComplete: false,
          stream: process.stderr,
        },
        Presets.shades_classic,
      )
    : undefined;
  const bar = new Map<string, ReturnType<MultiBar['create']>>();
  const lastText = new Map<string, string>();
  const views = new Map<string, DeployView>();
  const interrupted = new AbortController();
  const onSigint = () => interrupted.abort();
  process.once('SIGINT', onSigint);
  try {
    for (;;) {
      const all = await Promise.all(ids.map((id) => client.request<DeployView>('GET', `/v1/deploys/${id}`)));
      let allDone = true;
      for (const d of all) {
        views.set(d.id, d);
        const p = progressOf(d);
        const total = p.rollout && !p.done ? p.rollout.total : p.desired;
        const value = p.rollout && !p.done ? p.rollout.updated : p.ready;
        if (bars) {
          let b = bar.get(d.id);
          if (!b) {
            b = bars.create(Math.max(total, 1), value, { text: p.text });
            bar.set(d.id, b);
          }
          b.setTotal(Math.max(total, 1));
          b.update(value, { text: p.text });
        } else if (!quiet && lastText.get(d.id) !== p.text) {
          process.stderr.write(`${p.text}\n`);
        }
        lastText.set(d.id, p.text);
        if (!p.done) allDone = false;
        if (p.failed) exitCode = 1;
      }
      if (allDone) break;
      if (performance.now() >= deadline) {
        bars?.stop();
        exitCode = 1;
        for (const id of ids) {
          const p = progressOf(views.get(id)!);
          if (!p.done) process.stderr.write(`shoal: ${id}: timed out after ${flags.timeout} s (${p.text})\n`);
        }
        return [...views.values()];
      }
      await sleep(500, interrupted.signal);
      if (interrupted.signal.aborted) {
        bars?.stop();
        process.stderr.write('shoal: stopped waiting; the deploy goes on (see shoal ps)\n');
        exitCode = 130;
        return [...views.values()];
      }
    }
  } finally {
    process.off('SIGINT', onSigint);
    bars?.stop();
  }
  for (const d of views.values()) {
    const p = progressOf(d);
    if (p.failed) process.stderr.write(`shoal: ${d.id}: ${p.failed}\n`);
  }
  return [...views.values()];
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((done) => {
    const onAbort = () => {
      clearTimeout(t);
      done();
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      done();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

clientCommand('deploy', 'deploy a Compose file (or a JSON intent) and wait until it runs')
  .argument('<file>', 'Compose file (YAML) or a JSON intent {name, replicas, spec}')
  .option('--project <name>', 'project name (deploy ids become <project>-<service>)')
  .option('--detach', 'return once the agent accepted the deploy')
  .option('--timeout <seconds>', 'how long to wait for every replica (0 = no limit)', '300')
  .action(async (file: string, opts: ClientFlags & WaitFlags & { project?: string; detach?: boolean }) => {
    parseSeconds(opts.timeout, '--timeout');
    const client = clientOf(opts);
    const answer = await submitSpecFile(client, '/v1/deploys', file, opts.project);
    if (!opts.json) {
      for (const w of answer.warnings) process.stderr.write(`warning: ${w}\n`);
      process.stderr.write(`accepted: ${answer.deploys.map((d) => d.id).join(', ')}\n`);
    }
    if (opts.detach) {
      if (opts.json) printJson(answer);
      return;
    }
    const views = await waitForDeploys(
      client,
      answer.deploys.map((d) => d.id),
      opts,
    );
    if (opts.json) printJson({ deploys: views, warnings: answer.warnings });
  });

clientCommand('ps', 'replicas of every deploy (or one): host, status, health, age')
  .argument('[deploy]', 'only this deploy')
  .option('--wide', 'full host ids')
  .action(async (deploy: string | undefined, opts: ClientFlags & { wide?: boolean }) => {
    const client = clientOf(opts);
    const views =
      deploy === undefined
        ? await client.request<DeployView[]>('GET', '/v1/deploys')
        : [await client.request<DeployView>('GET', `/v1/deploys/${encodeURIComponent(deploy)}`)];
    if (opts.json) printJson(views);
    else if (views.length === 0) process.stdout.write('no deploys\n');
    else process.stdout.write(`${formatPs(views, Date.now(), opts.wide)}\n`);
  });

clientCommand('inspect', 'a deploy’s full view as JSON')
  .argument('<deploy>')
  .action(async (deploy: string, opts: ClientFlags) => {
    printJson(await clientOf(opts).request('GET', `/v1/deploys/${encodeURIComponent(deploy)}`));
  });

clientCommand('scale', 'set the number of replicas of a deploy')
  .argument('<deploy>')
  .argument('<replicas>')
  .action(async (deploy: string, n: string, opts: ClientFlags) => {
    const replicas = parseCount(n, '<replicas>');
    const v = await clientOf(opts).request<DeployView>('PATCH', `/v1/deploys/${encodeURIComponent(deploy)}`, {
      body: { replicas },
    });
    if (opts.json) printJson(v);
    else process.stdout.write(`${v.id}: scaled to ${v.replicas} replica${v.replicas === 1 ? '' : 's'}\n`);
  });

clientCommand('rm', 'remove a deploy (its replicas stop)')
  .argument('<deploy>')
  .action(async (deploy: string, opts: ClientFlags) => {
    await clientOf(opts).request('DELETE', `/v1/deploys/${encodeURIComponent(deploy)}`);
    if (opts.json) printJson({ removed: deploy });
    else process.stdout.write(`removed ${deploy}\n`);
  });

clientCommand('update', 'rolling update of a deploy: new image, env or Compose file')
  .argument('<deploy>')
  .option('--image <image>', 'new image')
  .option('--env <k=v>', 'set an environment variable (repeatable)', (v: string, prev: string[] = []) => [
    ...prev,
    v,
  ])
  .option('--file <file>', 'new Compose file (the service of this deploy replaces its spec)')
  .option('--detach', 'return once the agent accepted the update')
  .option('--timeout <seconds>', 'how long to wait for the rollout (0 = no limit)', '300')
  .action(
    async (
      deploy: string,
      opts: ClientFlags & WaitFlags & { image?: string; env?: string[]; file?: string; detach?: boolean },
    ) => {
      parseSeconds(opts.timeout, '--timeout');
      const path = `/v1/deploys/${encodeURIComponent(deploy)}`;
      const client = clientOf(opts);
      let view: DeployView;
      if (opts.file !== undefined) {
        if (opts.image !== undefined || opts.env !== undefined) {
          throw new UsageError('--file: give either --file or --image/--env, not both');
        }
        const [v] = (await submitSpecFile(client, '/v1/deploys', opts.file, undefined, deploy)).deploys;
        if (!v) throw new Error(`${opts.file}: no service for deploy ${deploy}`);
        view = v;
      } else {
        const spec: Record<string, unknown> = {};
        if (opts.image !== undefined) {
          if (opts.image.trim() === '') throw new UsageError('--image: expected an image name');
          spec.image = opts.image;
        }
        if (opts.env !== undefined) {
          // --env adds to (or changes) the deploy's environment; the rest of it stays.
          const pairs = parseEnvPairs(opts.env, '--env');
          const cur = await client.request<DeployView>('GET', path);
          const env = cur.spec.env;
          spec.env = { ...(env && typeof env === 'object' && !Array.isArray(env) ? env : {}), ...pairs };
        }
        if (Object.keys(spec).length === 0)
          throw new UsageError('nothing to update: give --image, --env or --file');
        view = await client.request<DeployView>('PATCH', path, { body: { spec } });
      }
      if (opts.detach) {
        if (opts.json) printJson(view);
        else
          process.stderr.write(
            `${view.id}: update accepted${view.version ? ` (version ${view.version})` : ''}\n`,
          );
        return;
      }
      const [last] = await waitForDeploys(client, [view.id], opts);
      if (opts.json) printJson(last);
    },
  );

clientCommand('rollback', 'roll a deploy back to its previous version')
  .argument('<deploy>')
  .option('--detach', 'return once the agent accepted the rollback')
  .option('--timeout <seconds>', 'how long to wait (0 = no limit)', '300')
  .action(async (deploy: string, opts: ClientFlags & WaitFlags & { detach?: boolean }) => {
    parseSeconds(opts.timeout, '--timeout');
    const client = clientOf(opts);
    const view = await client.request<DeployView>(
      'POST',
      `/v1/deploys/${encodeURIComponent(deploy)}/rollback`,
    );
    if (opts.detach) {
      if (opts.json) printJson(view);
      else
        process.stderr.write(
          `${view.id}: rolling back${view.version ? ` to version ${view.version}` : ''}\n`,
        );
      return;
    }
    const [last] = await waitForDeploys(client, [view.id], opts);
    if (opts.json) printJson(last);
  });

clientCommand('history', 'versions of a deploy (rolling updates)')
  .argument('<deploy>')
  .action(async (deploy: string, opts: ClientFlags) => {
    const v = await clientOf(opts).request<DeployView>('GET', `/v1/deploys/${encodeURIComponent(deploy)}`);
    if (!Array.isArray(v.history)) {
      throw new Error(`${deploy}: the agent reports no version history (is it an older shoal?)`);
    }
    if (opts.json) printJson(v.history);
    else process.stdout.write(`${formatHistory(v, Date.now())}\n`);
  });

// ───────────────────────────── workloads: logs, exec, jobs ─────────────────────────────

async function workloadsOf(client: ShoalClient, deploy: string): Promise<WorkloadView[]> {
  return client.request<WorkloadView[]>('GET', '/v1/workloads', { query: { deploy } });
}

/** Write one log line: stdout/stderr as it came, prefixed with the replica when several are shown. */
function writeLogLine(l: LogLine, prefix: string | undefined, json: boolean): void {
  if (json) {
    process.stdout.write(`${JSON.stringify(l)}\n`);
    return;
  }
  const out = l.stream === 'stderr' ? process.stderr : process.stdout;
  out.write(prefix === undefined ? `${l.line}\n` : `${prefix} | ${l.line}\n`);
}

clientCommand('logs', 'print (and follow) the logs of a deploy’s replicas')
  .argument('<target>', '<deploy> or <deploy>/<replica>')
  .option('-f, --follow', 'keep printing new lines until Ctrl-C')
  .option('--tail <n>', 'only the last n lines of each replica')
  .option('--since <duration>', 'only lines newer than this (10m, 1h) or a date')
  .action(async (target: string, opts: ClientFlags & { follow?: boolean; tail?: string; since?: string }) => {
    const t = parseTarget(target, '<target>');
    const tail = opts.tail === undefined ? undefined : parseCount(opts.tail, '--tail', 1_000_000);
    const since = opts.since === undefined ? undefined : parseSince(opts.since, Date.now());
    const client = clientOf(opts);
    const ws = pickWorkloads(await workloadsOf(client, t.deploy), t.deploy, t.replica);
    const several = ws.length > 1;
    const stop = new AbortController();
    const onSigint = () => stop.abort();
    process.once('SIGINT', onSigint);
    const collected: LogLine[] = [];
    try {
      await Promise.all(
        ws.map((w) =>
          client.ndjson<LogLine>(
            `/v1/workloads/${encodeURIComponent(w.id)}/logs`,
            { query: { follow: opts.follow ? 1 : undefined, tail, since }, signal: stop.signal },
            (l) => {
              const line = several ? { ...l, replica: l.replica ?? w.replica } : l;
              // Following: print as lines arrive. Otherwise: merge the replicas by time below.
              if (opts.follow)
                writeLogLine(line, several ? `${t.deploy}/${w.replica}` : undefined, !!opts.json);
              else collected.push(line);
            },
          ),
        ),
      );
    } finally {
      process.off('SIGINT', onSigint);
    }
    collected.sort((a, b) => a.ts - b.ts);
    for (const l of collected) writeLogLine(l, several ? `${t.deploy}/${l.replica}` : undefined, !!opts.json);
  });

clientCommand('exec', 'run a command in a replica and exit with its exit code')
  .argument('<target>', '<deploy> or <deploy>/<replica> (default: the first running replica)')
  .argument('[command...]', 'the command, after --')
  .option('--timeout <seconds>', 'kill the command after this long', '60')
  .action(async (target: string, command: string[], opts: ClientFlags & { timeout: string }) => {
    const argv = argsAfterDashDash() ?? command;
    if (argv.length === 0)
      throw new UsageError('exec: give the command after --, e.g. shoal exec web -- ls /');
    const timeoutMs = parseSeconds(opts.timeout, '--timeout');
    const t = parseTarget(target, '<target>');
    const client = clientOf(opts);
    const ws = pickWorkloads(await workloadsOf(client, t.deploy), t.deploy, t.replica);
    const w = ws.find((x) => x.status === 'running') ?? ws[0]!;
    if (w.status !== undefined && w.status !== 'running') {
      throw new Error(`${t.deploy}/${w.replica}: not running (${w.status})`);
    }
    const r = await client.request<ExecResult>('POST', `/v1/workloads/${encodeURIComponent(w.id)}/exec`, {
      body: { command: argv, timeoutMs },
      timeoutMs: timeoutMs + 10_000,
    });
    if (opts.json) printJson(r);
    else {
      process.stdout.write(r.stdout);
      process.stderr.write(r.stderr);
    }
    exitCode = r.exitCode;
  });

/** A deploy id for `shoal run --image`: the image's base name and a random suffix. */
function jobName(image: string): string {
  const base =
    image
      .replace(/[@:].*$/, '')
      .split('/')
      .pop()!
      .toLowerCase()
      .replace(/[^a-z0-9-]+/g, '-')
      .replace(/^-+|-+$/g, '')
      .slice(0, 40) || 'job';
  return `${base}-${randomBytes(3).toString('hex')}`;
}

clientCommand('run', 'run a job to completion, stream its logs, exit with its exit code')
  .argument('[file]', 'Compose file whose service is the job (or use --image)')
  .argument('[command...]', 'command for --image, after --')
  .option('--image <image>', 'run this image as a one-off job')
  .option('--name <name>', 'job name with --image (default: image name + random suffix)')
  .option('--project <name>', 'project name with a file')
  .option('--detach', 'print the job id and return')
  .option('--timeout <seconds>', 'give up waiting after this long (0 = no limit)', '0')
  .action(
    async (
      fileArg: string | undefined,
      commandArg: string[],
      opts: ClientFlags & {
        image?: string;
        name?: string;
        project?: string;
        detach?: boolean;
        timeout: string;
      },
    ) => {
      const after = argsAfterDashDash();
      const timeoutMs = parseSeconds(opts.timeout, '--timeout');
      const client = clientOf(opts);
      let created: SubmitAnswer;
      if (opts.image !== undefined) {
        // Operands before `--` would be a file: with --image there is none.
        const before = after === undefined ? [fileArg, ...commandArg] : [];
        if (after === undefined && before.some((x) => x !== undefined)) {
          throw new UsageError(
            'run --image: put the command after --, e.g. shoal run --image busybox -- echo hi',
          );
        }
        const name = opts.name ?? jobName(opts.image);
        if (!/^[a-z0-9][a-z0-9-]{0,62}$/.test(name)) {
          throw new UsageError(`--name: expected 1-63 characters of a-z, 0-9 and -, got "${name}"`);
        }
        const service: Record<string, unknown> = { image: opts.image, 'x-shoal': { job: {} } };
        if (after && after.length > 0) service.command = after;
        const parsed = parseCompose(stringifyYaml({ services: { [name]: service } }), {
          file: `${name}.yaml`,
          env: {},
        });
        const d = parsed.deploys[0]!;
        created = submitAnswer(
          await client.request('POST', '/v1/jobs', {
            body: { name: d.name, replicas: d.replicas, strategy: d.strategy, spec: d.spec },
          }),
        );
      } else {
        if (fileArg === undefined) throw new UsageError('run: give a Compose file or --image <image>');
        if (after !== undefined && after.length > 0)
          throw new UsageError('run <file>: the command comes from the file; -- is for --image');
        created = await submitSpecFile(client, '/v1/jobs', fileArg, opts.project);
      }
      const id = created.deploys[0]?.id;
      if (typeof id !== 'string')
        throw new Error(`unexpected answer from the agent: ${JSON.stringify(created).slice(0, 200)}`);
      if (opts.detach) {
        if (opts.json) printJson({ id });
        else process.stdout.write(`${id}\n`);
        return;
      }
      if (!opts.json) process.stderr.write(`job ${id} accepted\n`);
      const status = await followJob(client, id, timeoutMs, !!opts.json);
      if (opts.json) printJson(status);
      if (status.status === 'succeeded' || status.status === 'failed') {
        exitCode = status.exitCode ?? (status.status === 'succeeded' ? 0 : 1);
        if (!opts.json && status.status === 'failed') {
          process.stderr.write(
            `shoal: job ${id} failed (exit code ${status.exitCode ?? 'none'}, attempts ${status.attempts ?? 1})\n`,
          );
        }
      } else {
        exitCode = 1;
        process.stderr.write(`shoal: job ${id}: still ${status.status} after ${opts.timeout} s\n`);
      }
    },
  );

/**
 * Stream the logs of a job's workloads (new attempts included) while long-polling
 * GET /v1/jobs/:id/wait, until the job ends or the timeout passes. With `json` the log lines go
 * nowhere (stdout holds only the final status).
 */
async function followJob(
  client: ShoalClient,
  id: string,
  timeoutMs: number,
  json: boolean,
): Promise<JobStatus> {
  const deadline = timeoutMs === 0 ? Number.POSITIVE_INFINITY : Date.now() + timeoutMs;
  const stopLogs = new AbortController();
  const interrupted = new AbortController();
  const onSigint = () => interrupted.abort();
  process.once('SIGINT', onSigint);
  /** Attempts streamed so far: lines printed, and whether the stream has ended. */
  const streaming = new Map<string, { wid: string; lines: number; ended: boolean }>();
  const streams: Promise<void>[] = [];
  const stream = (key: string, wid: string, follow: boolean) => {
    const st = streaming.get(key) ?? { wid, lines: 0, ended: false };
    st.ended = false;
    streaming.set(key, st);
    streams.push(
      client
        .ndjson<LogLine>(
          `/v1/workloads/${encodeURIComponent(wid)}/logs`,
          follow ? { query: { follow: 1 }, signal: stopLogs.signal } : {},
          (l) => {
            st.lines++;
            if (!json) writeLogLine(l, undefined, false);
          },
        )
        .catch((err) => {
          process.stderr.write(`shoal: logs of ${wid}: ${(err as Error).message}\n`);
        })
        .finally(() => {
          st.ended = true;
        }),
    );
  };
  /** Stream the logs of every attempt not streamed yet (`follow` while the job runs). */
  const streamNew = async (follow: boolean) => {
    const ws = await workloadsOf(client, id).catch(() => [] as WorkloadView[]);
    for (const w of ws) {
      const key = `${w.id}@${w.gen ?? ''}`;
      if (w.deployId !== id || streaming.has(key) || w.host === null) continue;
      stream(key, w.id, follow);
    }
  };
  const watchLogs = async () => {
    while (!stopLogs.signal.aborted) {
      await streamNew(true);
      await sleep(1000, stopLogs.signal);
    }
  };
  const watcher = watchLogs();
  const interruptedP = new Promise<undefined>((r) =>
    interrupted.signal.addEventListener('abort', () => r(undefined), { once: true }),
  );
  try {
    for (;;) {
      const left = deadline - Date.now();
      const waitMs = Math.max(1, Math.min(30_000, left));
      const s = await Promise.race([
        client.request<JobStatus>('GET', `/v1/jobs/${encodeURIComponent(id)}/wait`, {
          query: { timeoutMs: waitMs },
          timeoutMs: waitMs + 10_000,
          signal: interrupted.signal,
        }),
        interruptedP,
      ]);
      if (s === undefined) {
        process.stderr.write(`shoal: stopped waiting; job ${id} goes on (see shoal ps ${id})\n`);
        return { id, status: 'running', exitCode: null };
      }
      if (s.status === 'succeeded' || s.status === 'failed' || Date.now() >= deadline) {
        // A job can end before the log watcher saw it: print the logs of attempts not streamed yet.
        await streamNew(false);
        // Let the last lines of a finished job arrive before closing the streams.
        await Promise.race([Promise.all(streams), sleep(2000)]);
        // A follow opened before the container started ends at once, empty (the engine follows
        // running containers only): read those attempts' logs again now that they have run.
        const again = [...streaming].filter(([, st]) => st.ended && st.lines === 0);
        if (again.length > 0) {
          const before = streams.length;
          for (const [key, st] of again) stream(key, st.wid, false);
          await Promise.race([Promise.all(streams.slice(before)), sleep(2000)]);
        }
        return s;
      }
    }
  } finally {
    process.off('SIGINT', onSigint);
    stopLogs.abort();
    await watcher;
    await Promise.all(streams);
  }
}

// ───────────────────────────── nodes: drain ─────────────────────────────

/** A node argument: a full id, or a unique part of one (e.g. the tail that tables show). */
async function resolveNode(client: ShoalClient, arg: string): Promise<NodeRow> {
  const nodes = await client.request<NodeRow[]>('GET', '/v1/nodes');
  const exact = nodes.find((n) => n.id === arg);
  if (exact) return exact;
  const part = arg.replace(/^…/, '');
  const matches = nodes.filter((n) => n.id.includes(part));
  if (matches.length === 1) return matches[0]!;
  if (matches.length === 0) throw new Error(`<node>: no member matches "${arg}" (see shoal nodes)`);
  throw new Error(`<node>: "${arg}" matches ${matches.length} members; give more of the id`);
}

clientCommand('drain', 'move every workload off a node and keep new ones away (--undo to allow again)')
  .argument('<node>', 'node id (or a unique part of it)')
  .option('--undo', 'allow workloads on the node again')
  .option('--detach', 'return once the agent accepted the change')
  .option('--timeout <seconds>', 'how long to wait for the node to empty (0 = no limit)', '600')
  .action(
    async (nodeArg: string, opts: ClientFlags & { undo?: boolean; detach?: boolean; timeout: string }) => {
      const timeoutMs = parseSeconds(opts.timeout, '--timeout');
      const client = clientOf(opts);
      const n = await resolveNode(client, nodeArg);
      const drain = !opts.undo;
      const answer = await client.request<NodeRow>('POST', `/v1/nodes/${encodeURIComponent(n.id)}/drain`, {
        body: { drain },
      });
      if (opts.detach || !drain) {
        if (opts.json) printJson(answer);
        else process.stderr.write(`${n.id}: ${drain ? 'draining' : 'accepts workloads again'}\n`);
        return;
      }
      const deadline = timeoutMs === 0 ? Number.POSITIVE_INFINITY : Date.now() + timeoutMs;
      let last = '';
      for (;;) {
        const [view, ws] = await Promise.all([
          client.request<NodeRow>('GET', `/v1/nodes/${encodeURIComponent(n.id)}`),
          client.request<WorkloadView[]>('GET', '/v1/workloads', { query: { host: n.id } }),
        ]);
        const left = ws.filter((w) => w.host === n.id).length;
        const text = `${shortId(n.id)}: ${view.draining ? 'draining' : 'drain not seen yet'}, ${left} workload${left === 1 ? '' : 's'} left`;
        if (!opts.json && text !== last) process.stderr.write(`${text}\n`);
        last = text;
        if (view.draining === true && left === 0) {
          if (opts.json) printJson(view);
          else process.stderr.write(`${n.id}: drained\n`);
          return;
        }
        if (Date.now() >= deadline) {
          exitCode = 1;
          process.stderr.write(`shoal: ${n.id}: not drained after ${opts.timeout} s (${text})\n`);
          return;
        }
        await sleep(1000);
      }
    },
  );

registerSimCommands(program);

// ───────────────────────────── run ─────────────────────────────

try {
  await program.parseAsync(process.argv);
  process.exitCode = exitCode;
} catch (err) {
  if (err instanceof CommanderError) {
    // --help and --version end here with code 0; parse errors were printed by commander.
    process.exit(err.exitCode === 0 ? 0 : 2);
  }
  process.stderr.write(`shoal: ${(err as Error).message}\n`);
  process.exit(err instanceof UsageError ? 2 : 1);
}
