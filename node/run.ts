import { Rollouts } from './core/rollout.ts';
import '../gossip/polyfill.ts';
import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { DockerEngine } from '../engines/docker.ts';
import type { Engine } from '../engines/engine.ts';
import { ProcessEngine } from '../engines/process.ts';
import { SimEngine, SimMachine } from '../engines/sim.ts';
import { loadOrCreateIdentity } from '../gossip/identity.ts';
import { Libp2pTransport } from '../gossip/libp2p.ts';
import { StreamProtocol } from '../gossip/streams.ts';
import { loadSwarmKey } from '../gossip/swarm-key.ts';
import { describeDrainRoutes, describeWorkloadRoutes, startApi } from './api.ts';
import { loadOrCreateToken } from './auth.ts';
import { agentBackend } from './backend.ts';
import { parseDuration } from './cli-format.ts';
import { Agent } from './core/agent.ts';
import { HealthMonitor } from './core/health.ts';
import type { Logger } from './core/io.ts';
import { Placement } from './core/placement.ts';
import { Prng } from './core/random.ts';
import { Reconciler } from './core/reconcile.ts';
import { StateSync } from './core/state-sync.ts';
import { deploysBackend } from './deploys-backend.ts';
import { type DrainDeps, registerDrainRoutes } from './drain-api.ts';
import { Forwarder } from './forward.ts';
import { detectHost } from './host.ts';
import { RealClock } from './io/clock.ts';
import { DiskStore } from './io/disk-store.ts';
import { createLogger } from './io/logger.ts';
import { EngineProber } from './io/prober.ts';
import { registerWorkloadRoutes, type WorkloadsDeps } from './workloads-api.ts';

/** Options of `shoal agent` (see node/cli.ts; every flag has a SHOAL_* twin). */
export interface AgentOptions {
  dataDir: string;
  listen: string[];
  api: string;
  join: string[];
  clusterKey?: string;
  engine?: string;
  dockerSocket?: string;
  cpu?: string;
  memory?: string;
  disk?: string;
  gpu?: string;
  label: string[];
  /** Operator-provided API token file (same file on every agent = one token for all). */
  tokenFile?: string;
  /** Require the token on GET /metrics too. */
  metricsAuth?: boolean;
  logLevel: 'trace' | 'debug' | 'info' | 'warn' | 'error';
  /**
   * StateSyncConfig.publishGapMs (ms, as given on the command line; `--publish-gap-ms`, 0 = off).
   * Off by default: on 10 agents on loopback it halved publishes and cut frames per decision by a
   * fifth but measured no gain in throughput or CPU and a slightly higher p99 (docs/state.md,
   * "Publish pacing"): a knob for large clusters, where a publish costs n − 1 frames.
   */
  publishGapMs?: string | number;
  /** PlacementConfig.directAward (`--direct-awards on|off`; default on). */
  directAwards?: 'on' | 'off';
  /** StateSyncConfig.tombstoneTtlMs as given on the command line (`--tombstone-ttl`, a duration; 0s = never). */
  tombstoneTtl?: string;
}

export interface RunningAgent {
  agent: Agent;
  sync: StateSync;
  placement: Placement;
  apiUrl: string;
  /** The API bearer token (node/auth.ts). */
  token: string;
  stop(opts?: { leave?: boolean }): Promise<void>;
}

/**
 * Other hosts' records reach the disk at most every 10 s (StateSyncConfig.hostPersistIntervalMs):
 * they are a cache of what peers hold, and logging each new version every second made the state
 * log outgrow its base every few seconds under load, each time rewriting the whole state.
 */
export const HOST_PERSIST_INTERVAL_MS = 10_000;

/** Wire the sans-IO core to the real world (libp2p, wall clock, disk) and serve the API. */
export async function startAgent(opts: AgentOptions): Promise<RunningAgent> {
  const dataDir = resolve(opts.dataDir);
  mkdirSync(dataDir, { recursive: true });
  const log = createLogger({ level: opts.logLevel });
  const identity = await loadOrCreateIdentity(dataDir);
  const token = loadOrCreateToken(dataDir, opts.tokenFile);
  if (token.warning) log.warn({ file: token.path }, token.warning);
  const swarmKey = opts.clusterKey ? loadSwarmKey(opts.clusterKey) : undefined;
  const host = detectHost(dataDir, {
    cpu: opts.cpu,
    memory: opts.memory,
    disk: opts.disk,
    gpu: opts.gpu,
    labels: opts.label,
  });
  const transport = await Libp2pTransport.create({
    privateKey: identity.privateKey,
    listen: opts.listen,
    swarmKey,
    logger: log.child({ mod: 'libp2p' }),
  });
  const clock = new RealClock();
  // The real agent's randomness is a PRNG seeded from the OS; the seed is logged so a run can be replayed.
  const seed = randomBytes(4).readUInt32LE(0);
  const random = new Prng(seed);
  const store = new DiskStore(join(dataDir, 'state'));
  const agentLog = log.child({ node: identity.peerId.slice(-8) });
  const agent = new Agent({ transport, clock, random, store, log: agentLog }, { seeds: opts.join, host });
  const sync = new StateSync(
    { transport, clock, random, store, log: agentLog.child({ mod: 'state' }), membership: agent.membership },
    host,
    {
      ...(opts.publishGapMs !== undefined && { publishGapMs: Number(opts.publishGapMs) }),
      ...(opts.tombstoneTtl !== undefined && {
        tombstoneTtlMs: parseDuration(opts.tombstoneTtl, '--tombstone-ttl'),
      }),
      hostPersistIntervalMs: HOST_PERSIST_INTERVAL_MS,
    },
  );
  agent.use(sync);
  const placement = new Placement(
    {
      transport,
      clock,
      store,
      log: agentLog.child({ mod: 'placement' }),
      membership: agent.membership,
      sync,
    },
    { directAward: opts.directAwards !== 'off' },
  );
  agent.use(placement);
  // An intent that waits for the publish window goes at once to the agent that places it.
  sync.urgentPeer = (deployId) => placement.coordinatorOf(deployId);
  const engine = await chooseEngine(opts, identity.peerId, dataDir, agentLog.child({ mod: 'engine' }));
  placement.engineKind = engine.capabilities.kind;
  const health = new HealthMonitor({
    clock,
    prober: new EngineProber(engine),
    log: agentLog.child({ mod: 'health' }),
  });
  const reconciler = new Reconciler({
    engine,
    clock,
    log: agentLog.child({ mod: 'reconcile' }),
    placement,
    sync,
    health,
  });
  agent.use(reconciler);
  const rollouts = new Rollouts({
    id: agent.id,
    clock,
    log: agentLog.child({ mod: 'rollout' }),
    sync,
    membership: agent.membership,
    coordinatorOf: (d) => placement.coordinatorOf(d),
    coordinated: () => placement.coordinated(),
    pendingOf: (d) => placement.pending().find((p) => p.deployId === d),
  });
  agent.use(rollouts);
  await agent.start();
  // ---- agent-to-agent forwarding + workload routes (node/forward.ts, node/workloads-api.ts) ----
  const memberStatus = (id: string) => (id === agent.id ? 'alive' : agent.membership.get(id)?.status);
  const streams = new StreamProtocol(transport.libp2p, {
    logger: log.child({ mod: 'forward' }),
    // Forwarded calls are served for live cluster members only (noise authenticated the peer id).
    accept: (peer) => {
      const s = memberStatus(peer);
      return s === 'alive' || s === 'suspect'
        ? true
        : `${peer} is not a live member of this cluster (${s ?? 'unknown'})`;
    },
  });
  const forwarder = new Forwarder({
    self: agent.id,
    streams,
    memberStatus,
    log: agentLog.child({ mod: 'forward' }),
  });
  const workloads: WorkloadsDeps = {
    self: agent.id,
    hosts: () => sync.state.hosts.allLive(),
    memberStatus,
    engine,
    forwarder,
  };
  registerWorkloadRoutes(forwarder.local, workloads, { local: true });
  const drain: DrainDeps = {
    self: agent.id,
    setDraining: (on) => sync.setDraining(on),
    status: () => ({
      draining: sync.self()?.draining ?? false,
      workloads: sync.self()?.workloads.length ?? 0,
    }),
    forwarder,
  };
  registerDrainRoutes(forwarder.local, drain, { local: true });
  // Why a deploy's replicas are unplaced is known to its coordinator only: others ask it.
  forwarder.local.get<{ Params: { id: string } }>('/v1/deploys/:id/pending', async (req, reply) => {
    const p = placement.pending().find((x) => x.deployId === req.params.id);
    if (!p)
      return reply.code(404).send({ error: 'not-found', message: `nothing pending for ${req.params.id}` });
    return { pending: p.pending, reasons: p.reasons, retryAt: p.retryAt };
  });
  await forwarder.start();
  // ----
  const api = await startApi(
    agentBackend(agent, sync, clock, clock.now(), { placement, reconciler, transport }),
    opts.api,
    {
      deploys: {
        ...deploysBackend(sync, placement, agent.membership),
        selfId: agent.id,
        pendingAt: async (coordinator, id) => {
          const r = await forwarder.json<{ pending: number; reasons: string[]; retryAt: number }>(
            coordinator,
            { method: 'GET', path: `/v1/deploys/${encodeURIComponent(id)}/pending` },
            { timeoutMs: 1500 },
          );
          return r.status === 200 ? r.body : undefined;
        },
      },
      token: token.token,
      metricsAuth: opts.metricsAuth === true,
      routes: [
        (app, table) => {
          registerWorkloadRoutes(app, workloads);
          describeWorkloadRoutes(table);
          registerDrainRoutes(app, drain);
          describeDrainRoutes(table);
        },
      ],
    },
  );
  log.info(
    {
      id: agent.id,
      addrs: transport.addrs(),
      api: api.url,
      dataDir,
      tokenFile: token.path,
      private: !!swarmKey,
      engine: engine.capabilities.kind,
      seed,
      capacity: {
        cores: host.cores,
        cpuMilli: host.cpuMilli,
        memory: host.memoryBytes,
        gpus: host.gpus.length,
      },
      labels: host.labels,
    },
    'shoal agent ready',
  );
  let stopping: Promise<void> | undefined;
  return {
    agent,
    sync,
    placement,
    apiUrl: api.url,
    token: token.token,
    stop: (o = {}) => {
      stopping ??= (async () => {
        await api.close();
        await forwarder.stop();
        await agent.stop({ leave: o.leave });
        await engine.close();
      })();
      return stopping;
    },
  };
}

/** `shoal agent`: run until SIGINT/SIGTERM, then leave the cluster gracefully. */
export async function runAgent(opts: AgentOptions): Promise<void> {
  const running = await startAgent(opts);
  let signals = 0;
  const onSignal = (sig: string) => {
    signals++;
    if (signals > 1) process.exit(130);
    running.agent.log.info({ signal: sig }, 'leaving the cluster');
    void running.stop({ leave: true }).then(() => process.exit(0));
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('unhandledRejection', (err) => {
    running.agent.log.error(
      { err: String((err as Error)?.stack ?? err) },
      'unhandled rejection (continuing)',
    );
  });
}

/**
 * `--engine docker|process|auto`: auto uses Docker when its socket answers, else the process
 * engine (the embedded default that needs nothing installed).
 */
async function chooseEngine(
  opts: AgentOptions,
  hostId: string,
  dataDir: string,
  log: Logger,
): Promise<Engine> {
  const kind = opts.engine ?? 'auto';
  if (kind === 'sim') {
    // Simulated workloads on the real clock: placement and the reconcile loop run for real, nothing
    // is started on the host (demos, benchmarks of the control plane).
    const clock = new RealClock({ unref: true });
    return new SimEngine({
      hostId,
      machine: new SimMachine({ clock, random: new Prng(randomBytes(4).readUInt32LE(0)) }),
    });
  }
  if (kind === 'docker' || kind === 'auto') {
    const docker = new DockerEngine({ hostId, socketPath: opts.dockerSocket, logger: log });
    try {
      await docker.ping();
      return docker;
    } catch (err) {
      if (kind === 'docker') {
        throw new Error(
          `--engine docker: no Docker engine answers at ${docker.socketPath}: ${(err as Error).message}`,
        );
      }
      await docker.close();
      log.info({ socket: docker.socketPath }, 'no Docker engine answers; using the process engine');
    }
  }
  return new ProcessEngine({ hostId, dataDir, logger: log });
}
