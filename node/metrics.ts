import { Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client';

/**
 * Prometheus metrics of one agent, served at `GET /metrics` (text exposition format).
 *
 * Everything is collected lazily: each metric's `collect()` reads a snapshot of the agent taken at
 * scrape time, so there are no timers and an idle agent does no metrics work. Agent metrics live in
 * a per-agent Registry (several agents share one process in tests and benchmarks); the process
 * metrics of prom-client (CPU, RSS, heap, event-loop lag, GC) describe the process, not an agent,
 * so they live in one registry per process and keep their conventional names (`process_*`,
 * `nodejs_*`) so that stock Node.js dashboards work unchanged.
 */

export const MEMBER_STATUSES = ['alive', 'suspect', 'dead', 'left'] as const;
export type MemberStatusName = (typeof MEMBER_STATUSES)[number];

/** What the metrics read from an agent, once per scrape. */
export interface MetricsSnapshot {
  id: string;
  incarnation: number;
  uptimeSeconds: number;
  /** Members as this agent sees them (itself included), by status. */
  members: Record<MemberStatusName, number>;
  /** Host records in the cluster state: all (tombstones included) and live. */
  hosts: { known: number; live: number };
  /** StateSync counters (monotonic within the process). */
  sync: {
    published: number;
    exchanges: number;
    exchangesEqual: number;
    bucketsDiffering: number;
    tombstonesCollected: number;
    exchangeFailures: number;
    applied: number;
    rejected: number;
  };
  /** Agent counters (monotonic within the process). */
  agent: { badMessages: number; persistErrors: number };
  /** What this host advertises. */
  capacity: { cpuMilli: number; cores: number; memoryBytes: number; diskBytes: number; gpus: number };
  /** What is committed on this host (null until its own record exists). */
  allocated: { cpuMilli: number; memoryBytes: number; diskBytes: number } | null;
  /** Placement counters (monotonic) and deploys this agent coordinates that are pending. */
  placement?: {
    rounds: number;
    bidsAsked: number;
    directAwards: number;
    awardsAccepted: number;
    awardsRefused: number;
    dropped: number;
    decided: number;
    pendingDeploys: number;
    workloads: number;
  };
  /** Reconcile-loop counters (monotonic). */
  reconcile?: {
    created: number;
    restarted: number;
    replaced: number;
    updated: number;
    removed: number;
    adopted: number;
    errors: number;
    hookFailures: number;
  };
  /** Transport traffic counters (monotonic; the libp2p transport). */
  transport?: {
    framesSent: number;
    frameWrites: number;
    frameBytesSent: number;
    framesReceived: number;
    frameBytesReceived: number;
    requestsSent: number;
    requestsServed: number;
    topicDirect: number;
    topicGossip: number;
    sendDropped: number;
    publishDropped: number;
  };
}

export interface AgentMetrics {
  /** The agent's own registry (shoal_* metrics). */
  readonly registry: Registry;
  readonly contentType: string;
  /** Exposition text: the agent's metrics, then the process metrics. */
  render(): Promise<string>;
}

let processRegistry: Registry | undefined;

/**
 * prom-client's default metrics, registered once per process in a registry of their own (not the
 * global one). Registering them per agent would start one GC observer and one event-loop-delay
 * monitor per agent, never stopped.
 */
export function processMetricsRegistry(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

/**
 * Build the metrics of one agent over `read` (called at most once per scrape; the snapshot is
 * shared by all metrics of that scrape so they are mutually consistent).
 */
export function createAgentMetrics(
  read: () => MetricsSnapshot,
  opts: { processMetrics?: boolean } = {},
): AgentMetrics {
  const registry = new Registry();
  const registers = [registry];
  let cached: MetricsSnapshot | undefined;
  // Every collect() of one scrape runs in the same synchronous pass of registry.metrics(); the
  // snapshot is dropped at the next microtask, so the next scrape reads fresh values.
  const snap = (): MetricsSnapshot => {
    if (!cached) {
      cached = read();
      queueMicrotask(() => {
        cached = undefined;
      });
    }
    return cached;
  };

  const gauge = (name: string, help: string, value: (s: MetricsSnapshot) => number): void => {
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(value(snap()));
      },
    });
  };
  // Mirrors a counter kept by the core: reset, then add the current total.
  const counter = (name: string, help: string, value: (s: MetricsSnapshot) => number): void => {
    new Counter({
      name,
      help,
      registers,
      collect() {
        this.reset();
        this.inc(value(snap()));
      },
    });
  };

  new Gauge({
    name: 'shoal_agent_info',
    help: 'Always 1; the label id is this agent (libp2p peer id).',
    labelNames: ['id'],
    registers,
    collect() {
      this.reset();
      this.set({ id: snap().id }, 1);
    },
  });
  gauge('shoal_uptime_seconds', 'Seconds since this agent started.', (s) => s.uptimeSeconds);
  gauge(
    'shoal_incarnation',
    'Incarnation of this agent (SWIM; rises on each restart and each refuted suspicion).',
    (s) => s.incarnation,
  );
  new Gauge({
    name: 'shoal_members',
    help: 'Cluster members as this agent sees them (itself included), by status.',
    labelNames: ['status'],
    registers,
    collect() {
      const m = snap().members;
      for (const status of MEMBER_STATUSES) this.set({ status }, m[status]);
    },
  });
  gauge('shoal_hosts_known', 'Host records in the cluster state, tombstones included.', (s) => s.hosts.known);
  gauge('shoal_hosts_live', 'Live host records in the cluster state.', (s) => s.hosts.live);

  counter(
    'shoal_state_published_total',
    'Own host record versions published on the state topic.',
    (s) => s.sync.published,
  );
  counter(
    'shoal_state_exchanges_total',
    'Anti-entropy exchanges started with a peer.',
    (s) => s.sync.exchanges,
  );
  counter(
    'shoal_state_exchanges_equal_total',
    'Anti-entropy exchanges that found equal state hashes (nothing to repair).',
    (s) => s.sync.exchangesEqual,
  );
  counter(
    'shoal_state_digest_buckets_differing_total',
    'Digest buckets found different by anti-entropy exchanges (each exchange digests only those).',
    (s) => s.sync.bucketsDiffering,
  );
  counter(
    'shoal_state_tombstones_collected_total',
    'Tombstones (deleted deploys, removed hosts) forgotten after the tombstone TTL.',
    (s) => s.sync.tombstonesCollected,
  );
  counter(
    'shoal_state_exchange_failures_total',
    'Anti-entropy exchanges that failed (timeout, unreachable peer, bad answer).',
    (s) => s.sync.exchangeFailures,
  );
  counter(
    'shoal_state_applied_total',
    'Host and intent entries that changed local state when merged.',
    (s) => s.sync.applied,
  );
  counter(
    'shoal_state_rejected_total',
    'State messages rejected by validation (malformed or over limits).',
    (s) => s.sync.rejected,
  );
  counter(
    'shoal_bad_messages_total',
    'Malformed frames dropped by the agent (logged with peer and field).',
    (s) => s.agent.badMessages,
  );
  counter(
    'shoal_persist_errors_total',
    'Failed writes of durable state (retried on the next persist interval).',
    (s) => s.agent.persistErrors,
  );

  const placement: [keyof NonNullable<MetricsSnapshot['placement']>, string][] = [
    ['rounds', 'Auction rounds this agent ran as a coordinator.'],
    ['bidsAsked', 'Bid requests sent to hosts (one per host per round).'],
    [
      'directAwards',
      'Deploys awarded without a bid exchange, priced from the gossiped view (one per deploy per round).',
    ],
    ['awardsAccepted', 'Replica awards this host accepted and committed to its books.'],
    ['awardsRefused', 'Replica awards this host refused (no room by the time they arrived).'],
    ['dropped', 'Replicas this host dropped (deleted, scaled away, or a better claim elsewhere).'],
    ['decided', 'Replicas decided by rounds this agent coordinated.'],
  ];
  for (const [k, help] of placement) {
    const snake = k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
    counter(`shoal_placement_${snake}_total`, help, (s) => s.placement?.[k] ?? 0);
  }
  gauge(
    'shoal_placement_pending_deploys',
    'Deploys this agent coordinates with unplaced replicas.',
    (s) => s.placement?.pendingDeploys ?? 0,
  );
  gauge('shoal_host_workloads', 'Replicas committed on this host.', (s) => s.placement?.workloads ?? 0);
  const reconcile: [keyof NonNullable<MetricsSnapshot['reconcile']>, string][] = [
    ['created', 'Workloads created and started by the reconcile loop.'],
    ['restarted', 'Workloads restarted (exit per restart policy, or unhealthy).'],
    ['replaced', 'Workloads recreated because their spec changed.'],
    ['updated', 'Live resource updates (realloc).'],
    ['removed', 'Workloads stopped and removed (no longer awarded here).'],
    ['adopted', 'Running workloads adopted from the engine at start.'],
    ['errors', 'Engine actions that failed (retried with backoff).'],
    ['hookFailures', 'afterStart hooks that failed with force (start treated as failed).'],
  ];
  for (const [k, help] of reconcile) {
    const snake = k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
    counter(`shoal_reconcile_${snake}_total`, help, (s) => s.reconcile?.[k] ?? 0);
  }

  const transport: [keyof NonNullable<MetricsSnapshot['transport']>, string][] = [
    ['framesSent', 'Frames (messages, direct topic copies) written to peers’ message streams.'],
    ['frameWrites', 'Stream writes carrying those frames (frames queued together go in one write).'],
    ['frameBytesSent', 'Bytes of those frames.'],
    ['framesReceived', 'Frames read from peers’ message streams.'],
    ['frameBytesReceived', 'Bytes read from peers’ message streams.'],
    ['requestsSent', 'Requests sent (one stream each).'],
    ['requestsServed', 'Requests answered.'],
    ['topicDirect', 'Topic publishes sent by direct fan-out.'],
    ['topicGossip', 'Topic publishes sent through gossipsub.'],
    ['sendDropped', 'Direct messages dropped (unreachable peer, full queue, too large).'],
    ['publishDropped', 'Topic publishes (or direct copies of one) dropped.'],
  ];
  for (const [k, help] of transport) {
    const snake = k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
    counter(`shoal_transport_${snake}_total`, help, (s) => s.transport?.[k] ?? 0);
  }

  gauge('shoal_host_cpu_millicores', 'CPU this host advertises, in millicores.', (s) => s.capacity.cpuMilli);
  gauge('shoal_host_cores', 'Whole cores this host offers for binding.', (s) => s.capacity.cores);
  gauge('shoal_host_memory_bytes', 'Memory this host advertises.', (s) => s.capacity.memoryBytes);
  gauge('shoal_host_disk_bytes', 'Disk this host advertises (of its data dir).', (s) => s.capacity.diskBytes);
  gauge('shoal_host_gpus', 'GPU devices this host advertises.', (s) => s.capacity.gpus);
  gauge(
    'shoal_host_allocated_cpu_millicores',
    'CPU committed to workloads on this host, in millicores.',
    (s) => s.allocated?.cpuMilli ?? 0,
  );
  gauge(
    'shoal_host_allocated_memory_bytes',
    'Memory committed to workloads on this host.',
    (s) => s.allocated?.memoryBytes ?? 0,
  );
  gauge(
    'shoal_host_allocated_disk_bytes',
    'Disk committed to workloads on this host.',
    (s) => s.allocated?.diskBytes ?? 0,
  );

  const withProcess = opts.processMetrics ?? true;
  return {
    registry,
    contentType: registry.contentType,
    async render() {
      const own = await registry.metrics();
      if (!withProcess) return own;
      return `${own}\n${await processMetricsRegistry().metrics()}`;
    },
  };
}
