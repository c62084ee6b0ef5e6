import { createHash } from 'node:crypto';
import { Agent } from '../node/core/agent.ts';
import { MemberIds } from '../node/core/member-table.ts';
import type { MembershipConfig } from '../node/core/membership.ts';
import { Prng } from '../node/core/random.ts';
import { EventLoop, VirtualClock } from './clock.ts';
import { defaultHost, SimCluster, TraceLogger } from './cluster.ts';
import { type LinkModel, SimNetwork, type SimNetworkOptions } from './network.ts';
import { MemoryStore } from './store.ts';

/**
 * Membership only: N agent cores (node/core Agent, which runs Membership and its wire) on a
 * SimNetwork and virtual time, without StateSync or Placement. For measuring and testing the
 * membership protocol alone at scales the full agent cannot reach yet (bench sim-scale
 * `--membership-only`, test/membership-*.test.ts). Agents join through agent 0, as in SimCluster;
 * ids are SimCluster's (`n00000`, …), and seeds/forks are derived the same way.
 */

export interface MembershipSimOptions {
  seed: number;
  size: number;
  link?: Partial<LinkModel>;
  network?: Omit<SimNetworkOptions, 'link' | 'trace'>;
  membership?: Partial<MembershipConfig>;
  /** Record every log line and network event (determinism checks). */
  trace?: boolean;
  /** How often each agent persists its member list (Agent default 1000 ms). */
  persistIntervalMs?: number;
  /**
   * One table of interned member ids for all agents, filled with every agent id up front (default
   * true). false: each agent interns ids in the order it meets them — same decisions (tested).
   */
  sharedIds?: boolean;
  /**
   * Membership messages travel as shared immutable values charged their encoded length
   * (Transport.sendValue) instead of JSON bytes (default true). Same trace either way (tested).
   */
  shareDecoded?: boolean;
  /** Start as a formed cluster (SimClusterOptions.formed): no join storm. */
  formed?: boolean;
  /** SimClusterOptions.formedCopy. */
  formedCopy?: boolean;
}

export interface MemberSimAgent {
  id: string;
  index: number;
  agent: Agent;
  clock: VirtualClock;
  store: MemoryStore;
  up: boolean;
}

export class MembershipSim {
  readonly loop = new EventLoop();
  readonly net: SimNetwork;
  readonly agents: MemberSimAgent[] = [];
  readonly trace: string[] | undefined;
  private readonly rng: Prng;
  /** Shared by every agent unless `sharedIds: false`. */
  readonly memberIds: MemberIds | undefined;

  constructor(readonly opts: MembershipSimOptions) {
    this.rng = new Prng(opts.seed);
    if (opts.sharedIds ?? true) {
      this.memberIds = new MemberIds();
      for (let i = 0; i < opts.size; i++) this.memberIds.intern(SimCluster.idOf(i));
    }
    this.trace = opts.trace ? [] : undefined;
    const trace = this.trace;
    this.net = new SimNetwork(this.loop, this.rng.fork('network'), {
      ...opts.network,
      link: opts.link,
      trace: trace ? (ev) => void trace.push(`${this.loop.now} net ${JSON.stringify(ev)}`) : undefined,
    });
  }

  /** Create agents (all of them by default) and start them; they join through agent 0. */
  async start(count = this.opts.size): Promise<void> {
    const from = this.agents.length;
    for (let i = from; i < Math.min(this.opts.size, from + count); i++) {
      const a = this.makeAgent(i, new MemoryStore());
      this.agents.push(a);
      await a.agent.start();
    }
    if (this.opts.formed && from === 0) {
      const states = this.agents.map((a) => a.agent.membership.selfState());
      for (const a of this.agents)
        a.agent.membership.assumeFormed(
          states,
          this.opts.formedCopy === false ? undefined : this.agents[0]!.agent.membership,
        );
    }
  }

  private makeAgent(i: number, store: MemoryStore): MemberSimAgent {
    const id = SimCluster.idOf(i);
    const seedId = SimCluster.idOf(0);
    const transport = this.net.createTransport(id, { zone: defaultHost(i).labels.zone });
    const clock = new VirtualClock(this.loop);
    const random = this.rng.fork(`agent-${id}-${this.loop.now}`);
    const log = new TraceLogger(this.trace, () => this.loop.now, { agent: id });
    const agent = new Agent(
      { transport, clock, random, store, log },
      {
        seeds: id === seedId ? [] : [`sim://${seedId}`],
        host: defaultHost(i),
        membership: this.opts.membership,
        persistIntervalMs: this.opts.persistIntervalMs,
        memberIds: this.memberIds,
        directValues: this.opts.shareDecoded ?? true,
      },
    );
    return { id, index: i, agent, clock, store, up: true };
  }

  get(i: number): MemberSimAgent {
    return this.agents[i]!;
  }

  async run(ms: number): Promise<void> {
    await this.loop.runForAsync(ms);
  }

  /** Run until `pred` holds (checked every `stepMs`) or `maxMs` passes; elapsed virtual ms, or -1. */
  async runUntil(pred: () => boolean, maxMs: number, stepMs = 50): Promise<number> {
    const start = this.loop.now;
    while (this.loop.now - start <= maxMs) {
      if (pred()) return this.loop.now - start;
      await this.run(stepMs);
    }
    return pred() ? this.loop.now - start : -1;
  }

  crash(i: number): void {
    const a = this.get(i);
    a.clock.kill();
    this.net.crash(a.id);
    a.up = false;
  }

  async restart(i: number): Promise<MemberSimAgent> {
    const old = this.get(i);
    this.net.restart(old.id);
    const fresh = this.makeAgent(i, old.store);
    this.agents[i] = fresh;
    await fresh.agent.start();
    return fresh;
  }

  upAgents(): MemberSimAgent[] {
    return this.agents.filter((a) => a.up);
  }

  /** Number of live agents. */
  upCount(): number {
    let n = 0;
    for (const a of this.agents) if (a.up) n++;
    return n;
  }

  /** How many live agents satisfy `pred` for their view of member `id`. */
  countViews(pred: (a: MemberSimAgent) => boolean): number {
    let n = 0;
    for (const a of this.agents) if (a.up && pred(a)) n++;
    return n;
  }

  /** Every live agent sees every live agent alive (suspect tolerated) and each crashed one as `down`. */
  settled(down: 'dead' | 'left' = 'dead', tolerateSuspect = true): boolean {
    for (const a of this.agents) {
      if (!a.up) continue;
      const m = a.agent.membership;
      for (const b of this.agents) {
        if (a === b) continue;
        const s = m.get(b.id)?.status;
        if (b.up) {
          if (s !== 'alive' && !(tolerateSuspect && s === 'suspect')) return false;
        } else if (s !== down) return false;
      }
    }
    return true;
  }

  traceHash(): string {
    return createHash('sha256')
      .update((this.trace ?? []).join('\n'))
      .digest('hex');
  }

  async stop(): Promise<void> {
    for (const a of this.upAgents()) await a.agent.stop();
  }
}
