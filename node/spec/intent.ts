import { z } from 'zod';
import { parseConstraint } from '../../allocator/constraints.ts';
import type { JsonObject } from '../../crdt/types.ts';
import { HOST_IP_UNSUPPORTED, publishedMismatch } from '../core/placement-adapter.ts';

/**
 * The canonical deploy intent spec: ONE zod schema for what the cluster stores in
 * `IntentFields.spec` (each top-level key is its own LWW register) and what users may POST
 * directly. Strict everywhere (an unknown key is an error, a typo is never a no-op); every error
 * is `{path, message}` with a dotted/indexed path such as `spec.resources.memoryBytes` or
 * `spec.healthcheck.command[0]`. Reference: docs/spec.md.
 *
 * Normalisation: inside every key that is present, defaults are filled in (health check timings,
 * hook force/timeout, port protocol, volume readOnly, update settings, ...); absent top-level
 * keys stay absent (their defaults are documented), and `healthcheck: null` / `hooks: null` are
 * dropped. The normalised spec validates again to itself, and is accepted by the older ad-hoc
 * parsers (placement-adapter, health, hooks, reconcile): e.g. `expectStatus` is normalised to
 * `[min, max]`, which `parseHealthcheck` reads.
 *
 * Pure: no I/O, deterministic.
 */

// --- limits (same values as node/core/health.ts and hooks.ts) ------------------------------------

/** One day: a typo must not park a timer for years. */
export const MAX_DURATION_MS = 86_400_000;
export const MAX_RETRIES = 1_000;
export const MAX_ARGV = 256;
export const MAX_ARG_CHARS = 4_096;
export const MAX_PATH_CHARS = 4_096;
export const MAX_HOOK_TIMEOUT_MS = 600_000;
export const MAX_MAP_ENTRIES = 1_024;
export const MAX_LIST_ITEMS = 256;
export const MAX_STRING_CHARS = 4_096;

export const HEALTHCHECK_DEFAULTS = {
  interval: 10_000,
  timeout: 2_000,
  retries: 3,
  startPeriod: 0,
  path: '/',
  expectStatus: [200, 399] as [number, number],
} as const;
export const DEFAULT_HOOK_TIMEOUT_MS = 10_000;
export const UPDATE_DEFAULTS = {
  parallelism: 1,
  delayMs: 0,
  failureAction: 'rollback',
  monitorMs: 5_000,
  maxFailureRatio: 0,
  order: 'stop-first',
} as const;
export const RESTART_POLICY_DEFAULTS = { delayMs: 1_000 } as const;
export const JOB_DEFAULTS = { retries: 0, backoffMs: 1_000 } as const;

export const STRATEGIES = ['binpack', 'spread', 'auto', 'global', 'fill', 'each'] as const;
export const ID_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;

// --- building blocks ------------------------------------------------------------------------

/** An integer in min..max, one message for every way of missing it. */
function intIn(min: number, max: number) {
  const error = `expected an integer in ${min}..${max}`;
  return z.number({ error }).int({ error }).min(min, { error }).max(max, { error });
}

function nonNegInt() {
  const error = 'expected a non-negative integer';
  return z.number({ error }).int({ error }).min(0, { error }).max(Number.MAX_SAFE_INTEGER, { error });
}
function positiveInt() {
  const error = 'expected a positive integer';
  return z.number({ error }).int({ error }).min(1, { error }).max(Number.MAX_SAFE_INTEGER, { error });
}
const durationMs = (min = 0) => intIn(min, MAX_DURATION_MS);

function str(what: string, max = MAX_STRING_CHARS) {
  const error = `expected ${what} (1..${max} characters, no NUL)`;
  return z
    .string({ error })
    .min(1, { error })
    .max(max, { error })
    .refine((s) => !s.includes('\0'), { error });
}

function bool() {
  return z.boolean({ error: 'expected true or false' });
}

function oneOf<const T extends readonly [string, ...string[]]>(values: T) {
  return z.enum(values, { error: `expected one of ${values.join(', ')}` });
}

/**
 * A strict object: unknown keys are errors listing the allowed ones. The `error` also covers a
 * value that is not an object at all.
 */
function strict<S extends z.ZodRawShape>(shape: S, what: string) {
  const allowed = Object.keys(shape).join(', ');
  return z.strictObject(shape, {
    error: (iss) =>
      iss.code === 'unrecognized_keys'
        ? `unknown field (allowed: ${allowed})`
        : iss.code === 'invalid_type'
          ? `expected an object ${what}`
          : undefined,
  });
}

/** argv without a shell: non-empty list of strings, argv[0] a command name. */
function argv() {
  const item = z
    .string({ error: 'expected a string' })
    .max(MAX_ARG_CHARS, { error: `at most ${MAX_ARG_CHARS} characters, no NUL` })
    .refine((s) => !s.includes('\0'), { error: `at most ${MAX_ARG_CHARS} characters, no NUL` });
  return z
    .array(item, { error: 'expected a non-empty list of strings (argv, no shell)' })
    .min(1, { error: 'expected a non-empty list of strings (argv, no shell)' })
    .max(MAX_ARGV, { error: `at most ${MAX_ARGV} arguments` })
    .superRefine((a, ctx) => {
      if (a[0] === '') ctx.addIssue({ code: 'custom', path: [0], message: 'expected a command name' });
    });
}

/** A list of strings appended to the command (may be empty: no arguments). */
function argList() {
  const item = z
    .string({ error: 'expected a string' })
    .max(MAX_ARG_CHARS, { error: `at most ${MAX_ARG_CHARS} characters, no NUL` })
    .refine((s) => !s.includes('\0'), { error: `at most ${MAX_ARG_CHARS} characters, no NUL` });
  return z
    .array(item, { error: 'expected a list of strings' })
    .max(MAX_ARGV, { error: `at most ${MAX_ARGV} arguments` });
}

function absPath(what: string) {
  const error = `expected an absolute ${what} path (starting with /, at most ${MAX_PATH_CHARS} characters, no NUL)`;
  return z
    .string({ error })
    .max(MAX_PATH_CHARS, { error })
    .refine((s) => s.startsWith('/') && !s.includes('\0'), { error });
}

function stringMap(keyRule: RegExp, keyWhat: string, valueMax = MAX_STRING_CHARS) {
  const keyError = `invalid key: expected ${keyWhat}`;
  const valueError = `expected a string (at most ${valueMax} characters, no NUL)`;
  return z
    .record(
      z.string().regex(keyRule, { error: keyError }),
      z
        .string({ error: valueError })
        .max(valueMax, { error: valueError })
        .refine((s) => !s.includes('\0'), { error: valueError }),
      { error: 'expected a map of strings' },
    )
    .refine((m) => Object.keys(m).length <= MAX_MAP_ENTRIES, {
      error: `at most ${MAX_MAP_ENTRIES} entries`,
    });
}

// --- parts of the spec ------------------------------------------------------------------------

const timing = {
  interval: durationMs(1).default(HEALTHCHECK_DEFAULTS.interval),
  timeout: durationMs(1).default(HEALTHCHECK_DEFAULTS.timeout),
  retries: intIn(1, MAX_RETRIES).default(HEALTHCHECK_DEFAULTS.retries),
  startPeriod: durationMs(0).default(HEALTHCHECK_DEFAULTS.startPeriod),
};
const port = () => intIn(1, 65_535);
const statusCode = () => intIn(100, 599);
const HTTP_PATH_RE = /^\/[\x21-\x7e]*$/;

const expectStatus = z
  .union([statusCode(), z.tuple([statusCode(), statusCode()])], {
    error: 'expected a status code (200) or an inclusive range [200, 399]',
  })
  .transform((v): [number, number] => (typeof v === 'number' ? [v, v] : [v[0], v[1]]))
  .refine((v) => v[0] <= v[1], { error: 'empty range: the first code is above the second' });

const healthcheckSchema = z.discriminatedUnion(
  'type',
  [
    strict({ type: z.literal('tcp'), port: port(), ...timing }, 'for a tcp check'),
    strict(
      {
        type: z.literal('http'),
        port: port(),
        path: z
          .string({ error: 'expected a string' })
          .max(2_048, {
            error: "expected a path starting with '/' (printable ASCII, no spaces, at most 2048 characters)",
          })
          .regex(HTTP_PATH_RE, {
            error: "expected a path starting with '/' (printable ASCII, no spaces, at most 2048 characters)",
          })
          .default(HEALTHCHECK_DEFAULTS.path)
          .meta({ description: "Starts with '/'; printable ASCII, no spaces" }),
        expectStatus: expectStatus.default([...HEALTHCHECK_DEFAULTS.expectStatus]),
        ...timing,
      },
      'for an http check',
    ),
    strict({ type: z.literal('exec'), command: argv(), ...timing }, 'for an exec check'),
  ],
  { error: 'expected an object {type: tcp|http|exec, ...}' },
);

const hookSchema = strict(
  {
    command: argv(),
    force: bool().default(false),
    timeoutMs: intIn(1, MAX_HOOK_TIMEOUT_MS).default(DEFAULT_HOOK_TIMEOUT_MS),
  },
  '{command, force?, timeoutMs?}',
);
const hooksSchema = strict(
  { afterStart: hookSchema.nullable().optional(), beforeStop: hookSchema.nullable().optional() },
  '{afterStart?, beforeStop?}',
).transform((h) => {
  const out: { afterStart?: z.output<typeof hookSchema>; beforeStop?: z.output<typeof hookSchema> } = {};
  if (h.afterStart) out.afterStart = h.afterStart;
  if (h.beforeStop) out.beforeStop = h.beforeStop;
  return out;
});

const resourcesSchema = strict(
  {
    cpu: strict(
      { milli: nonNegInt().meta({ description: '1000 = one core' }), bind: bool().optional() },
      '{milli, bind?}',
    ),
    memoryBytes: nonNegInt(),
    diskBytes: nonNegInt().default(0),
    gpu: strict(
      {
        milli: positiveInt().meta({ description: '1000 = one whole device' }),
        model: str('a GPU model', 256).optional(),
        memoryBytes: nonNegInt().optional(),
      },
      '{milli, model?, memoryBytes?}',
    ).optional(),
  },
  '{cpu: {milli, bind?}, memoryBytes, diskBytes?, gpu?}',
);

const limitsSchema = strict(
  { cpuMilli: nonNegInt().optional(), memoryBytes: nonNegInt().optional() },
  '{cpuMilli?, memoryBytes?}',
);

/**
 * Published ports run with host networking (docs/spec.md, docs/engines.md): the workload listens
 * on the host port itself, so `published`, when given, equals `target`, and `hostIp` cannot be
 * honoured (the workload picks the address it listens on). Both are refused, never ignored.
 */
const portSchema = strict(
  {
    target: port().meta({ description: 'the host port the workload listens on (host networking)' }),
    published: port().optional().meta({ description: 'must equal target (no port mapping)' }),
    protocol: oneOf(['tcp', 'udp']).default('tcp'),
    hostIp: z
      .union([z.ipv4(), z.ipv6()], { error: 'expected an IPv4 or IPv6 address' })
      .optional()
      .meta({ description: 'not supported: refused (host networking)' }),
  },
  '{target, published?, protocol?, hostIp?}',
).superRefine((p, ctx) => {
  if (p.published !== undefined && p.published !== p.target)
    ctx.addIssue({ code: 'custom', path: ['published'], message: publishedMismatch(p.target, p.published) });
  if (p.hostIp !== undefined)
    ctx.addIssue({ code: 'custom', path: ['hostIp'], message: HOST_IP_UNSUPPORTED });
});

const VOLUME_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$/;
const volumeSchema = strict(
  {
    type: oneOf(['bind', 'volume', 'tmpfs']),
    source: z.string({ error: 'expected a string' }).optional(),
    target: absPath('container'),
    readOnly: bool().default(false),
    sizeBytes: positiveInt().optional(),
  },
  '{type, source?, target, readOnly?, sizeBytes?}',
).superRefine((v, ctx) => {
  const at = (path: string, message: string) => ctx.addIssue({ code: 'custom', path: [path], message });
  if (v.type === 'bind') {
    if (v.source === undefined) at('source', 'a bind mount needs a source (an absolute host path)');
    else if (!v.source.startsWith('/') || v.source.includes('\0') || v.source.length > MAX_PATH_CHARS)
      at('source', 'expected an absolute host path (starting with /)');
    if (v.sizeBytes !== undefined) at('sizeBytes', 'only volume and tmpfs mounts have a size');
  } else if (v.type === 'volume') {
    if (v.source !== undefined && !VOLUME_NAME_RE.test(v.source))
      at('source', `expected a volume name matching ${VOLUME_NAME_RE.source}`);
  } else if (v.source !== undefined) {
    at('source', 'a tmpfs mount has no source');
  }
});

const updateFields = {
  parallelism: intIn(0, 10_000).default(UPDATE_DEFAULTS.parallelism).meta({ description: '0 = all at once' }),
  delayMs: durationMs().default(UPDATE_DEFAULTS.delayMs),
  monitorMs: durationMs().default(UPDATE_DEFAULTS.monitorMs),
  deadlineMs: durationMs()
    .optional()
    .meta({ description: 'a batch that shows no progress for this long fails (default 120000)' }),
  maxFailureRatio: z
    .number({ error: 'expected a number in 0..1' })
    .min(0, { error: 'expected a number in 0..1' })
    .max(1, { error: 'expected a number in 0..1' })
    .default(UPDATE_DEFAULTS.maxFailureRatio),
  order: oneOf(['stop-first', 'start-first']).default(UPDATE_DEFAULTS.order),
};
const UPDATE_WHAT =
  '{parallelism?, delayMs?, failureAction?, monitorMs?, deadlineMs?, maxFailureRatio?, order?}';
const updateSchema = strict(
  { ...updateFields, failureAction: oneOf(['rollback', 'pause', 'continue']).default('rollback') },
  UPDATE_WHAT,
);
/** A rollback that fails cannot roll back again. */
const rollbackSchema = strict(
  { ...updateFields, failureAction: oneOf(['pause', 'continue']).default('pause') },
  UPDATE_WHAT,
);

const ENV_KEY_RE = /^[^=\0]{1,256}$/;
const LABEL_KEY_RE = /^[^\0]{1,256}$/;

/** The canonical intent spec (input form: optional keys and defaults as a user may POST it). */
export const IntentSpecSchema = strict(
  {
    image: str('an image reference', 1_024).optional(),
    command: argv()
      .optional()
      .meta({ description: 'argv; replaces the image entrypoint (process engine: required)' }),
    args: argList()
      .optional()
      .meta({ description: 'appended to the command; alone it replaces the image CMD' }),
    env: stringMap(ENV_KEY_RE, "a variable name (no '=')", 65_536).optional(),
    workdir: absPath('working directory').optional(),
    user: str('a user (name, uid or uid:gid)', 256).optional(),
    labels: stringMap(LABEL_KEY_RE, 'a label key')
      .superRefine((m, ctx) => {
        for (const k of Object.keys(m).sort()) {
          if (k.toLowerCase().startsWith('shoal.'))
            ctx.addIssue({
              code: 'custom',
              path: [k],
              message: 'label keys starting with "shoal." are reserved',
            });
        }
      })
      .optional(),
    ports: z
      .array(portSchema, { error: 'expected a list of ports' })
      .max(MAX_LIST_ITEMS, { error: `at most ${MAX_LIST_ITEMS} ports` })
      .superRefine((ps, ctx) => {
        // Each host port once (the host port is `target`: host networking).
        const seen = new Map<string, number>();
        ps.forEach((p, i) => {
          const k = `${p.target}/${p.protocol}`;
          const j = seen.get(k);
          if (j !== undefined)
            ctx.addIssue({
              code: 'custom',
              path: [i, 'target'],
              message: `${k} is already published by ports[${j}]`,
            });
          else seen.set(k, i);
        });
      })
      .optional(),
    volumes: z
      .array(volumeSchema, { error: 'expected a list of mounts' })
      .max(MAX_LIST_ITEMS, { error: `at most ${MAX_LIST_ITEMS} mounts` })
      .superRefine((vs, ctx) => {
        const seen = new Map<string, number>();
        vs.forEach((v, i) => {
          const j = seen.get(v.target);
          if (j !== undefined)
            ctx.addIssue({
              code: 'custom',
              path: [i, 'target'],
              message: `${v.target} is already mounted by volumes[${j}]`,
            });
          else seen.set(v.target, i);
        });
      })
      .optional(),
    restart: oneOf(['no', 'on-failure', 'always']).optional().meta({ description: 'default always' }),
    restartPolicy: strict(
      {
        delayMs: durationMs().default(RESTART_POLICY_DEFAULTS.delayMs),
        maxAttempts: intIn(1, MAX_RETRIES).optional(),
        windowMs: durationMs(1).optional(),
      },
      '{delayMs?, maxAttempts?, windowMs?}',
    ).optional(),
    stopTimeoutMs: durationMs().optional(),
    healthcheck: healthcheckSchema.nullable().optional(),
    hooks: hooksSchema.nullable().optional(),
    engine: oneOf(['docker', 'process']).optional(),
    resources: resourcesSchema,
    limits: limitsSchema.optional(),
    constraints: z
      .array(
        z.string({ error: 'expected a string' }).superRefine((c, ctx) => {
          const r = parseConstraint(c);
          if (!r.ok) ctx.addIssue({ code: 'custom', message: r.error.message });
        }),
        { error: 'expected a list of strings' },
      )
      .max(MAX_LIST_ITEMS, { error: `at most ${MAX_LIST_ITEMS} constraints` })
      .optional(),
    spread: strict({ label: str('a label key', 256).optional() }, '{label?}').optional(),
    maxPerHost: intIn(1, 10_000).optional(),
    antiAffinity: bool().optional(),
    hostLimit: intIn(1, 100_000).optional(),
    update: updateSchema.optional(),
    rollbackConfig: rollbackSchema.optional(),
    job: strict(
      {
        retries: intIn(0, MAX_RETRIES).default(JOB_DEFAULTS.retries),
        backoffMs: durationMs().default(JOB_DEFAULTS.backoffMs),
      },
      '{retries?, backoffMs?}',
    )
      .optional()
      .meta({ description: 'present = a run-to-completion job' }),
  },
  '(the deploy spec)',
).superRefine((s, ctx) => {
  const at = (path: (string | number)[], message: string) => ctx.addIssue({ code: 'custom', path, message });
  const lim = s.limits;
  if (lim?.cpuMilli !== undefined && lim.cpuMilli < s.resources.cpu.milli)
    at(
      ['limits', 'cpuMilli'],
      `${lim.cpuMilli} is below the request of ${s.resources.cpu.milli} (resources.cpu.milli)`,
    );
  if (lim?.memoryBytes !== undefined && lim.memoryBytes < s.resources.memoryBytes)
    at(
      ['limits', 'memoryBytes'],
      `${lim.memoryBytes} is below the request of ${s.resources.memoryBytes} (resources.memoryBytes)`,
    );
  if (s.job && s.restart === 'always')
    at(
      ['restart'],
      'a job runs to completion: restart must be no or on-failure (job.retries bounds the retries)',
    );
  if (s.engine === 'process' && s.command === undefined)
    at(['command'], 'the process engine needs a command (there is no image entrypoint)');
});

export type IntentSpecInput = z.input<typeof IntentSpecSchema>;
export type IntentSpec = z.output<typeof IntentSpecSchema>;

export interface SpecIssue {
  /** Dotted/indexed path from the root given to the validator: `spec.healthcheck.command[0]`. */
  path: string;
  message: string;
}

export type SpecResult<T> = { ok: true; spec: T } | { ok: false; issues: SpecIssue[] };

const SIMPLE_KEY = /^[A-Za-z_][A-Za-z0-9_-]*$/;

/** `spec` + ['resources', 'cpu'] + [0] → `spec.resources.cpu[0]`; odd keys are quoted: `env["a.b"]`. */
export function joinPath(root: string, path: readonly PropertyKey[]): string {
  let out = root;
  for (const k of path) {
    if (typeof k === 'number') out += `[${k}]`;
    else if (typeof k === 'string' && SIMPLE_KEY.test(k)) out += out === '' ? k : `.${k}`;
    else out += `[${JSON.stringify(String(k))}]`;
  }
  return out;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 39)}…` : v);
  if (typeof v === 'object') return 'an object';
  return String(v);
}

/** zod issues → {path, message}, sorted by path (stable), one per unknown key. */
export function toSpecIssues(issues: readonly z.core.$ZodIssue[], root: string): SpecIssue[] {
  const out: SpecIssue[] = [];
  for (const iss of issues) {
    const path = iss.path as PropertyKey[];
    if (iss.code === 'unrecognized_keys') {
      for (const k of iss.keys) out.push({ path: joinPath(root, [...path, k]), message: iss.message });
      continue;
    }
    if (iss.code === 'invalid_key') {
      const inner = iss.issues[0]?.message ?? iss.message;
      out.push({ path: joinPath(root, path), message: inner });
      continue;
    }
    let message = iss.message;
    if (iss.code === 'invalid_type' && message.startsWith('Invalid input')) {
      message = iss.expected === 'undefined' ? 'unexpected field' : `expected ${iss.expected}`;
    }
    if (iss.code === 'invalid_type' && iss.input === undefined && iss.expected !== 'undefined') {
      message = `required: ${message}`;
    } else if (
      !(iss.code === 'invalid_union' && iss.discriminator !== undefined) &&
      (iss.input === null ||
        ['number', 'boolean'].includes(typeof iss.input) ||
        (typeof iss.input === 'string' && !message.includes(JSON.stringify(iss.input))))
    ) {
      message = `${message}, got ${describe(iss.input)}`;
    }
    if (iss.code === 'invalid_union' && iss.discriminator !== undefined) {
      const options = (iss as { options?: unknown[] }).options ?? [];
      message = `expected one of ${options.map(String).join(', ')}`;
    }
    out.push({ path: joinPath(root, path), message });
  }
  const seen = new Set<string>();
  return out.filter((i) => {
    const k = `${i.path}\0${i.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/** Drop keys whose value is null at the top level (healthcheck: null = no check) — JSON-clean. */
function clean(spec: IntentSpec): JsonObject {
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(spec)) {
    if (v === null || v === undefined) continue;
    out[k] = v as JsonObject[string];
  }
  return out;
}

/**
 * Validate a deploy intent spec. `root` prefixes every issue path (default `spec`). Returns the
 * normalised spec (defaults applied within the keys present) or every issue found.
 */
export function validateIntentSpec(spec: unknown, root = 'spec'): SpecResult<JsonObject & IntentSpec> {
  const r = IntentSpecSchema.safeParse(spec, { reportInput: true });
  if (!r.success) return { ok: false, issues: toSpecIssues(r.error.issues, root) };
  return { ok: true, spec: clean(r.data) as JsonObject & IntentSpec };
}

export interface IntentInput {
  name: unknown;
  replicas: unknown;
  strategy: unknown;
  spec: unknown;
}

export interface ValidIntent {
  name: string;
  replicas: number;
  strategy: (typeof STRATEGIES)[number];
  spec: JsonObject & IntentSpec;
}

/**
 * A whole intent (IntentFields): name, replicas, strategy and spec, with the checks that involve
 * more than the spec (`hostLimit` only with the per-host strategies fill and each).
 */
export function validateIntent(fields: IntentInput): SpecResult<ValidIntent> {
  const issues: SpecIssue[] = [];
  const { name, replicas, strategy } = fields;
  if (typeof name !== 'string' || !ID_RE.test(name))
    issues.push({
      path: 'name',
      message: 'expected 1-63 characters of a-z, 0-9 and -, starting with a letter or digit',
    });
  if (typeof replicas !== 'number' || !Number.isSafeInteger(replicas) || replicas < 0 || replicas > 10_000)
    issues.push({ path: 'replicas', message: 'expected an integer in 0..10000' });
  if (typeof strategy !== 'string' || !(STRATEGIES as readonly string[]).includes(strategy))
    issues.push({ path: 'strategy', message: `expected one of ${STRATEGIES.join(', ')}` });
  const s = validateIntentSpec(fields.spec);
  if (!s.ok) issues.push(...s.issues);
  else if (s.spec.hostLimit !== undefined && strategy !== 'fill' && strategy !== 'each')
    issues.push({ path: 'spec.hostLimit', message: 'only applies to the per-host strategies fill and each' });
  if (issues.length > 0 || !s.ok) return { ok: false, issues };
  return {
    ok: true,
    spec: {
      name: name as string,
      replicas: replicas as number,
      strategy: strategy as ValidIntent['strategy'],
      spec: s.spec,
    },
  };
}

/** JSON Schema (draft 2020-12) of the spec as users write it, for the OpenAPI document. */
export function intentSpecJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(IntentSpecSchema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
}
