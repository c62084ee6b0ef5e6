/**
 * shoal allocator: pure, deterministic placement functions (no I/O, no clock, no randomness).
 *
 *   feasibility(host, request, ctx) → allocation | reason          (feasibility.ts)
 *   score(host, request, ctx) → integer                            (strategies.ts, score.ts)
 *   select(bids, request, replicas, strategy) → winners            (strategies.ts)
 *   plan(hosts, request, replicas, strategy, existing) → Plan      (plan.ts, centralized baseline)
 *   bid(host, request, ctx, replicas) → Bid                        (plan.ts, decentralized piece)
 *   reserve / release / fits / ledgerFrom / checkNoOvercommit      (ledger.ts)
 *   host ports (one holder per port/protocol per host)              (ports.ts)
 *
 * See docs/placement.md for the resource model, constraint syntax, strategies and scoring.
 */
export * from './constraints.ts';
export { allocateCpu, boundMilli, describeCores, freeSharedMilli, schedulableSharedMilli } from './cpu.ts';
export {
  type AllocateResult,
  allocate,
  countsFor,
  type DeployCounts,
  feasibility,
} from './feasibility.ts';
export { countFits, MAX_FITS } from './fit.ts';
export { allocateGpu, describeGpuInventory, describeGpuNeed } from './gpu.ts';
export { checkNoOvercommit, cloneLedger, emptyLedger, fits, ledgerFrom, release, reserve } from './ledger.ts';
export { bid, type PlanOptions, plan } from './plan.ts';
export { comparePorts, isPort, PORT_PROTOCOLS, parsePortKey, portKey, portsInUse } from './ports.ts';
export {
  composeScore,
  DEFAULT_FRAGMENTATION_WEIGHT,
  fragmentationTerm,
  resourceScore,
  strategyTerm,
  type Utilization,
  utilization,
  worthInShapes,
} from './score.ts';
export { compareRanked, DEFAULT_STRATEGY, type Ranked, type Selection, score, select } from './strategies.ts';
export * from './types.ts';
export { formatBytes, GiB, KiB, MiB, scalePermille, TiB, tieBreak } from './units.ts';
export { validateCapacity, validateRequest, validateResources, validateTypical } from './validate.ts';
