import type { Transport } from '../../gossip/transport.ts';

/**
 * What a Transport implementation provides to the shared conformance suite
 * (test/conformance/transport.ts). The real transport waits in real time; the simulated one
 * advances virtual time.
 */
export interface TransportHarness {
  /** Create `n` not-yet-started, unconnected transports (the suite calls start() with its handlers). */
  create(n: number): Promise<Transport[]>;
  /** Make `a` able to reach `b` (dial b's address, or whatever the implementation needs). */
  connect(a: Transport, b: Transport): Promise<void>;
  /** Let `ms` of (real or virtual) time pass so in-flight traffic is delivered. */
  settle(ms: number): Promise<void>;
  /** Stop everything created. */
  cleanup(): Promise<void>;
  /** Optional fault hooks (the simulated network supports them; the real one may not). */
  partition?(groupA: Transport[], groupB: Transport[]): void;
  heal?(): void;
}
