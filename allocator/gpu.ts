/**
 * GPUs, per device. A request of `milli` asks for `milli / 1000` whole devices plus, when
 * `milli % 1000 > 0`, one fraction of a device (so 250 = a quarter of one device). Only devices of
 * the requested model (exact match) with at least the requested per-device memory are eligible.
 *
 * Whole devices must be completely idle; they are granted with all of their memory, lowest index
 * first. A fraction goes to the partially used eligible device with the least free milli that
 * still fits both milli and memory (best fit, keeps idle devices whole), else to the lowest-index
 * idle device left. GPUs are never oversold.
 */
import type { GpuDevice, GpuGrant, GpuRequest, HostCapacity, HostLedger, Milli } from './types.ts';
import { SHARE_BASE } from './types.ts';
import { compareStrings, fitsOf, formatBytes, plural } from './units.ts';

export type GpuResult = { ok: true; grants: GpuGrant[] } | { ok: false; message: string };

export function gpuEligible(device: GpuDevice, req: GpuRequest): boolean {
  if (req.model !== undefined && device.model !== req.model) return false;
  return req.memoryBytes === undefined || device.memoryBytes >= req.memoryBytes;
}

/** "1 × A100 ≥ 500 milli", "2 × A100 (whole)", "2 × GPU (whole) + 1 × GPU ≥ 250 milli, 8.0 GiB each". */
export function describeGpuNeed(req: GpuRequest): string {
  const model = req.model ?? 'GPU';
  const whole = Math.floor(req.milli / SHARE_BASE);
  const frag = req.milli % SHARE_BASE;
  const parts: string[] = [];
  if (whole > 0) parts.push(`${whole} × ${model} (whole)`);
  if (frag > 0) parts.push(`1 × ${model} ≥ ${frag} milli`);
  const mem = req.memoryBytes !== undefined ? ` with ${formatBytes(req.memoryBytes)} memory` : '';
  return parts.join(' + ') + mem;
}

/** "2 × T4, 1 × A100" grouped by model (sorted), or "no GPUs". */
export function describeGpuInventory(devices: readonly GpuDevice[]): string {
  if (devices.length === 0) return 'no GPUs';
  const byModel = new Map<string, number>();
  for (const d of devices) byModel.set(d.model, (byModel.get(d.model) ?? 0) + 1);
  return [...byModel.entries()]
    .sort((a, b) => compareStrings(a[0], b[0]))
    .map(([model, n]) => `${n} × ${model}`)
    .join(', ');
}

interface DeviceState {
  index: number;
  device: GpuDevice;
  freeMilli: Milli;
  freeMemory: number;
  idle: boolean;
}

function eligibleStates(capacity: HostCapacity, ledger: HostLedger, req: GpuRequest): DeviceState[] {
  const out: DeviceState[] = [];
  capacity.gpus.forEach((device, index) => {
    if (!gpuEligible(device, req)) return;
    const used = ledger.gpus[index] ?? { milli: 0, memoryBytes: 0 };
    out.push({
      index,
      device,
      freeMilli: SHARE_BASE - used.milli,
      freeMemory: device.memoryBytes - used.memoryBytes,
      idle: used.milli === 0 && used.memoryBytes === 0,
    });
  });
  return out;
}

export function allocateGpu(
  capacity: HostCapacity,
  ledger: HostLedger,
  req: GpuRequest | undefined,
): GpuResult {
  if (req === undefined || req.milli === 0) return { ok: true, grants: [] };
  const whole = Math.floor(req.milli / SHARE_BASE);
  const frag = req.milli % SHARE_BASE;
  const fragMemory = req.memoryBytes ?? 0;
  const states = eligibleStates(capacity, ledger, req);
  if (states.length === 0) {
    return {
      ok: false,
      message: `gpu: need ${describeGpuNeed(req)}, host has ${describeGpuInventory(capacity.gpus)}`,
    };
  }
  const idle = states.filter((s) => s.idle);
  const busy = (): GpuResult => {
    const largest = states.reduce(
      (m, s) => (!s.idle && s.freeMemory >= fragMemory ? Math.max(m, s.freeMilli) : m),
      0,
    );
    const model = req.model ?? 'GPU';
    const extra = largest > 0 ? `, largest fraction ${largest} milli` : '';
    return {
      ok: false,
      message: `gpu: need ${describeGpuNeed(req)}, free ${plural(idle.length, `whole ${model}`)}${extra}`,
    };
  };
  if (idle.length < whole) return busy();

  const grants: GpuGrant[] = idle
    .slice(0, whole)
    .map((s) => ({ index: s.index, milli: SHARE_BASE, memoryBytes: s.device.memoryBytes }));
  if (frag > 0) {
    let best: DeviceState | undefined;
    for (const s of states) {
      if (s.idle || s.freeMilli < frag || s.freeMemory < fragMemory) continue;
      if (best === undefined || s.freeMilli < best.freeMilli) best = s;
    }
    const target = best ?? idle[whole];
    if (target === undefined) return busy();
    grants.push({ index: target.index, milli: frag, memoryBytes: fragMemory });
  }
  grants.sort((a, b) => a.index - b.index);
  return { ok: true, grants };
}

/** How many more copies of `req` fit on the GPU side (capped at `cap`). */
export function gpuFits(
  capacity: HostCapacity,
  ledger: HostLedger,
  req: GpuRequest | undefined,
  cap: number,
): number {
  if (req === undefined || req.milli === 0) return cap;
  const whole = Math.floor(req.milli / SHARE_BASE);
  const frag = req.milli % SHARE_BASE;
  const states = eligibleStates(capacity, ledger, req);
  const idle = states.filter((s) => s.idle);
  if (frag === 0) return Math.min(cap, Math.floor(idle.length / whole));
  const mem = req.memoryBytes ?? 0;
  const perDevice = (freeMilli: Milli, freeMemory: number): number =>
    Math.min(fitsOf(freeMilli, frag), mem > 0 ? fitsOf(freeMemory, mem) : cap);
  let onPartial = 0;
  for (const s of states) if (!s.idle) onPartial += perDevice(s.freeMilli, s.freeMemory);
  // Idle devices turned into fraction hosts, the roomiest first.
  const perIdle = idle.map((s) => perDevice(SHARE_BASE, s.device.memoryBytes)).sort((a, b) => b - a);
  if (whole === 0)
    return Math.min(
      cap,
      perIdle.reduce((a, b) => a + b, onPartial),
    );
  let best = 0;
  let fractions = onPartial;
  for (let moved = 0; moved <= idle.length; moved++) {
    if (moved > 0) fractions += perIdle[moved - 1] ?? 0;
    best = Math.max(best, Math.min(Math.floor((idle.length - moved) / whole), fractions));
  }
  return Math.min(cap, best);
}
