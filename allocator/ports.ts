/**
 * Host ports. A workload that publishes ports runs with host networking (docs/engines.md), so a
 * port/protocol pair is a host-wide resource of capacity one: at most one allocation per host may
 * hold it. Ports are not counted in utilisation or scores; they only make a host infeasible.
 */
import type { HostLedger, PortProtocol, PortRequest } from './types.ts';
import { own } from './units.ts';

export const PORT_PROTOCOLS: readonly PortProtocol[] = ['tcp', 'udp'];

/** Ledger key of a port: `"80/tcp"`. */
export function portKey(p: PortRequest): string {
  return `${p.port}/${p.protocol}`;
}

const KEY = /^([1-9][0-9]{0,4})\/(tcp|udp)$/;

/** The port of a ledger key, or null if the key is malformed or out of range. */
export function parsePortKey(key: string): PortRequest | null {
  const m = KEY.exec(key);
  if (!m) return null;
  const port = Number(m[1]);
  if (port > 65_535) return null;
  return { port, protocol: m[2] as PortProtocol };
}

/** Whether `p` is a valid port (1..65535) and protocol (tcp|udp). */
export function isPort(p: unknown): p is PortRequest {
  if (typeof p !== 'object' || p === null) return false;
  const o = p as { port?: unknown; protocol?: unknown };
  return (
    typeof o.port === 'number' &&
    Number.isInteger(o.port) &&
    o.port >= 1 &&
    o.port <= 65_535 &&
    (o.protocol === 'tcp' || o.protocol === 'udp')
  );
}

/** Order ports by number, then protocol (tcp before udp). */
export function comparePorts(a: PortRequest, b: PortRequest): number {
  return a.port - b.port || (a.protocol < b.protocol ? -1 : a.protocol > b.protocol ? 1 : 0);
}

/** Requested ports the ledger already holds, in request order: one message each. */
export function portsInUse(ledger: HostLedger, ports: readonly PortRequest[] | undefined): string[] {
  if (ports === undefined || ports.length === 0) return [];
  const held = ledger.ports ?? {};
  const out: string[] = [];
  for (const p of ports) if ((own(held, portKey(p)) ?? 0) > 0) out.push(`port ${portKey(p)}: in use`);
  return out;
}

/** How many more copies of a request publishing `ports` fit: 1 if all are free, else 0 (capped). */
export function portFits(ledger: HostLedger, ports: readonly PortRequest[] | undefined, cap: number): number {
  if (ports === undefined || ports.length === 0) return cap;
  return portsInUse(ledger, ports).length === 0 ? Math.min(cap, 1) : 0;
}

/** Shape errors of a request's ports, with field paths. */
export function validatePorts(ports: unknown, path: string): string[] {
  if (ports === undefined) return [];
  if (!Array.isArray(ports)) return [`${path}: must be a list of {port, protocol}`];
  const errors: string[] = [];
  const seen = new Map<string, number>();
  ports.forEach((p: unknown, i) => {
    const q = `${path}[${i}]`;
    const o = (typeof p === 'object' && p !== null ? p : {}) as { port?: unknown; protocol?: unknown };
    const portOk = typeof o.port === 'number' && Number.isInteger(o.port) && o.port >= 1 && o.port <= 65_535;
    if (!portOk) errors.push(`${q}.port: must be an integer in 1..65535, got ${String(o.port)}`);
    if (o.protocol !== 'tcp' && o.protocol !== 'udp')
      errors.push(`${q}.protocol: must be tcp or udp, got ${String(o.protocol)}`);
    if (!isPort(p)) return;
    const k = portKey(p);
    const j = seen.get(k);
    if (j !== undefined) errors.push(`${q}: duplicate port ${k} (also ${path}[${j}])`);
    else seen.set(k, i);
  });
  return errors;
}
