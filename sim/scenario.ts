import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { defaultMembershipConfig } from '../node/core/membership.ts';
import { defaultPlacementConfig } from '../node/core/placement.ts';
import { defaultStateSyncConfig } from '../node/core/state-sync.ts';

/**
 * Scenario files (YAML): cluster, workload, faults and protocol settings of one simulated run.
 * Validated with zod; every error names the file and the field path (docs/simulator.md,
 * "Scenario files").
 */

export class ScenarioError extends Error {
  constructor(
    readonly file: string,
    readonly field: string,
    readonly problem: string,
  ) {
    super(`${file}: ${field}: ${problem}`);
    this.name = 'ScenarioError';
  }
}

const num = z.number().finite();
const nonNeg = num.nonnegative();
const pos = num.positive();
const int = z.number().int();
const prob = num.min(0).max(1);
const labels = z.record(z.string().regex(/^[a-zA-Z0-9][a-zA-Z0-9._\-/]{0,62}$/, 'bad label key'), z.string());

export const hostGroupSchema = z.strictObject({
  count: int.min(1),
  cpu_milli: int.min(1000).multipleOf(1000, 'must be whole cores (a multiple of 1000)'),
  memory_mib: int.min(1),
  gpu: int.min(0).default(0),
  gpu_model: z.string().min(1).default('GPU'),
  gpu_memory_mib: int.min(0).default(81_920),
  disk_gib: int.min(0).default(500),
  labels: labels.default({}),
});

export const shapeSchema = z.strictObject({
  weight: pos.default(1),
  cpu_milli: int.min(1),
  memory_mib: int.min(1),
  num_gpu: int.min(0).default(0),
  gpu_milli: int.min(0).max(1000).default(0),
  /** GPU model(s) allowed, `A100` or `V100M16|V100M32`; empty = any. */
  gpu_spec: z.string().default(''),
});

const lifetimeSchema = z.union([
  z.strictObject({ dist: z.literal('exponential'), mean_s: pos }),
  z.strictObject({ dist: z.literal('uniform'), min_s: nonNeg, max_s: nonNeg }),
  z.strictObject({ dist: z.literal('forever') }),
]);

const arrivalSchema = z.union([
  z.strictObject({ process: z.literal('poisson'), rate_per_s: pos }),
  z.strictObject({ process: z.literal('uniform'), interval_s: pos }),
  z.strictObject({ process: z.literal('burst'), at_s: nonNeg.default(0) }),
]);

export const STRATEGIES = ['binpack', 'spread', 'auto', 'global'] as const;

export const syntheticSchema = z.strictObject({
  /** Number of deploys submitted (arrivals stop at this count or at duration_s). */
  count: int.min(1),
  start_s: nonNeg.default(0),
  arrival: arrivalSchema,
  replicas: z.union([int.min(1), z.strictObject({ min: int.min(1), max: int.min(1) })]).default(1),
  shapes: z.array(shapeSchema).min(1),
  lifetime: lifetimeSchema.default({ dist: 'forever' }),
  strategy: z.enum(STRATEGIES).default('binpack'),
});

export const traceSchema = z.strictObject({
  /** CSV of tasks/pods (path relative to the scenario file). */
  pods_csv: z.string().min(1),
  /** Subtracted from creation/deletion times (s). */
  offset_s: num.default(0),
  /** Times are multiplied by this after the offset (e.g. 0.1 = ten times faster). */
  time_scale: pos.default(1),
  /** Use only the first N rows. */
  limit: int.min(1).optional(),
  strategy: z.enum(STRATEGIES).default('binpack'),
});

const selector = {
  /** Host indices (0-based), agent ids (`n00003`) or host names (the `id` column of a hosts CSV). */
  hosts: z.array(z.union([int.min(0), z.string()])).optional(),
  /** Every host whose zone label is this. */
  zone: z.string().optional(),
  /** Every host with all these labels. */
  label: labels.optional(),
  /** This many hosts drawn at random among the live ones (default 1 when nothing else is given). */
  count: int.min(1).optional(),
};

const faultSchema = z.discriminatedUnion('kind', [
  z.strictObject({
    kind: z.literal('crash'),
    at_s: nonNeg,
    ...selector,
    /** Restart after this long; absent = restarted when faults stop (end of duration_s). */
    down_s: pos.optional(),
    /** Never restarted (a lost host). */
    permanent: z.boolean().default(false),
  }),
  z.strictObject({
    kind: z.literal('partition'),
    at_s: nonNeg,
    ...selector,
    /** Or a random share of the live hosts. */
    fraction: num.gt(0).lt(1).optional(),
    for_s: pos,
  }),
  z.strictObject({ kind: z.literal('loss'), at_s: nonNeg, p: prob, for_s: pos }),
  z.strictObject({
    kind: z.literal('delay'),
    at_s: nonNeg,
    extra_ms: nonNeg,
    jitter_ms: nonNeg.default(0),
    for_s: pos,
  }),
  z.strictObject({ kind: z.literal('skew'), at_s: nonNeg, ...selector, ms: num }),
]);

function configSchema<T extends object>(defaults: T) {
  const shape: Record<string, z.ZodOptional<z.ZodNumber>> = {};
  for (const [k, v] of Object.entries(defaults)) if (typeof v === 'number') shape[k] = nonNeg.optional();
  return z.strictObject(shape).optional();
}

export const scenarioSchema = z
  .strictObject({
    name: z.string().min(1),
    description: z.string().default(''),
    seed: int.min(0).default(1),
    duration_s: pos,
    /** After duration_s (faults stopped, everyone restarted): how long the cluster may take to come to rest. */
    settle_s: pos.default(60),
    /** Metrics sampling step (s). */
    sample_s: pos.default(1),
    cluster: z
      .strictObject({
        hosts: z.array(hostGroupSchema).optional(),
        /** CSV of hosts (path relative to the scenario file). */
        hosts_csv: z.string().min(1).optional(),
        /** Zones dealt round robin to hosts without a `zone` label. */
        zones: z.array(z.string().min(1)).min(1).default(['a', 'b', 'c']),
      })
      .refine((c) => (c.hosts === undefined) !== (c.hosts_csv === undefined), {
        message: 'give exactly one of hosts, hosts_csv',
      }),
    network: z
      .strictObject({
        base_ms: nonNeg.default(1),
        jitter_ms: nonNeg.default(4),
        loss: prob.default(0),
      })
      .default({ base_ms: 1, jitter_ms: 4, loss: 0 }),
    /** Run workloads on the simulated engine (reconcile loop included). */
    engine: z.boolean().default(true),
    protocol: z
      .strictObject({
        membership: configSchema(defaultMembershipConfig),
        placement: configSchema(defaultPlacementConfig),
        sync: configSchema(defaultStateSyncConfig),
      })
      .default({}),
    workload: z
      .strictObject({ synthetic: syntheticSchema.optional(), trace: traceSchema.optional() })
      .refine((w) => w.synthetic !== undefined || w.trace !== undefined, {
        message: 'give synthetic, trace, or both',
      }),
    faults: z.array(faultSchema).default([]),
    invariants: z
      .strictObject({
        /** Sampling step of the overcommit check that includes bid reservations (ms). Committed books are checked at every change. */
        sample_ms: pos.default(100),
      })
      .default({ sample_ms: 100 }),
    plan: z
      .strictObject({
        /** A replica counts as placed if some host holds it within this long of its submission. */
        deadline_s: pos.default(30),
      })
      .default({ deadline_s: 30 }),
    /** Settings for thousands of agents (docs/simulator.md): each tested to give the same decisions. */
    scale: z
      .strictObject({
        /**
         * The shared-state stand-in: one copy of the cluster state, lazy visibility. Its envelope:
         * no message loss, no partitions, loss or delay faults, no restarts (crashes are permanent).
         */
        shared_state: z.boolean().default(false),
        /** Start as a formed cluster: every agent knows every other, no join storm. */
        formed: z.boolean().default(false),
        /** Route messages by id, persist every 10 s, decode each publish once for all agents. */
        large: z.boolean().default(false),
      })
      .default({ shared_state: false, formed: false, large: false }),
  })
  .superRefine((s, ctx) => {
    s.faults.forEach((f, i) => {
      if (f.at_s > s.duration_s)
        ctx.addIssue({
          code: 'custom',
          path: ['faults', i, 'at_s'],
          message: `after duration_s (${s.duration_s})`,
        });
      if (!s.scale.shared_state) return;
      if (f.kind === 'partition' || f.kind === 'loss' || f.kind === 'delay')
        ctx.addIssue({
          code: 'custom',
          path: ['faults', i, 'kind'],
          message: `${f.kind} faults are outside the shared-state stand-in's envelope (scale.shared_state)`,
        });
      if (f.kind === 'crash' && (!f.permanent || f.down_s !== undefined))
        ctx.addIssue({
          code: 'custom',
          path: ['faults', i, 'permanent'],
          message:
            'the shared-state stand-in does not model restarts (scale.shared_state): set permanent: true',
        });
    });
    if (s.scale.shared_state && s.network.loss > 0)
      ctx.addIssue({
        code: 'custom',
        path: ['network', 'loss'],
        message: 'must be 0 with the shared-state stand-in (scale.shared_state)',
      });
  });

export type Scenario = z.output<typeof scenarioSchema> & {
  /** Directory CSV paths are relative to. */
  baseDir: string;
  /** Where it was loaded from (for error messages). */
  file: string;
};
export type ScenarioInput = z.input<typeof scenarioSchema>;
export type HostGroup = z.output<typeof hostGroupSchema>;
export type Shape = z.output<typeof shapeSchema>;
export type Fault = z.output<typeof faultSchema>;
export type Synthetic = z.output<typeof syntheticSchema>;

function pathOf(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out || '(root)';
}

/** Validate a parsed scenario object; `file` names it in errors. */
export function parseScenario(raw: unknown, file: string, baseDir = '.'): Scenario {
  const r = scenarioSchema.safeParse(raw);
  if (!r.success) {
    const first = r.error.issues[0]!;
    const more = r.error.issues.length > 1 ? ` (and ${r.error.issues.length - 1} more problem(s))` : '';
    throw new ScenarioError(file, pathOf(first.path), first.message + more);
  }
  return { ...r.data, baseDir, file };
}

/** Read and validate a scenario YAML file. */
export function loadScenario(path: string): Scenario {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ScenarioError(path, '(file)', `cannot read: ${(err as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (err) {
    throw new ScenarioError(path, '(yaml)', (err as Error).message.split('\n')[0]!);
  }
  return parseScenario(raw, path, dirname(resolve(path)));
}

/** The scenario's JSON Schema (for editors). */
export function scenarioJsonSchema(): unknown {
  return z.toJSONSchema(scenarioSchema, { io: 'input', unrepresentable: 'any' });
}
