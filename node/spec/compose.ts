import { LineCounter, parseDocument } from 'yaml';
import { formatConstraint } from '../../allocator/constraints.ts';
import type { Constraint } from '../../allocator/types.ts';
import type { Json, JsonObject } from '../../crdt/types.ts';
import {
  ID_RE,
  joinPath,
  MAX_DURATION_MS,
  MAX_LIST_ITEMS,
  STRATEGIES,
  validateIntentSpec,
} from './intent.ts';

/**
 * Compose files → deploy intents. `parseCompose` reads a Compose file (the subset that makes
 * sense on a masterless cluster, docs/spec.md has the table), interpolates `${VAR}` from the
 * given environment like `docker compose`, and maps every service to one deploy whose spec
 * passes `validateIntentSpec`. Unknown keys are errors; Compose keys shoal knowingly ignores
 * are warnings naming the key; keys that cannot work here are errors saying why. Every problem
 * of the file is collected before throwing one SpecError.
 *
 * Deploy ids are deterministic (service name, or `<project>-<service>`): submitting one file to
 * two agents writes the same ids, and the intent CRDT converges. Pure: no I/O.
 */

export interface ComposeIssue {
  file: string;
  service?: string;
  /** Dotted/indexed path in the file (`services.api.deploy.resources.limits.memory`), or `line L, column C`. */
  path: string;
  message: string;
}

export class SpecError extends Error {
  constructor(readonly issues: ComposeIssue[]) {
    super(issues.map(formatIssue).join('\n'));
    this.name = 'SpecError';
  }
}

export function formatIssue(i: ComposeIssue): string {
  return `${i.file}: ${i.path}: ${i.message}`;
}

export interface ComposeOptions {
  /** Shown in every error and warning (e.g. `web.yaml`). */
  file: string;
  /** Variables for `${VAR}` interpolation and bare `environment` keys (e.g. process.env). */
  env?: Readonly<Record<string, string | undefined>>;
  /** Project name; overrides the file's top-level `name:`. Deploy ids become `<project>-<service>`. */
  project?: string;
  /** Active profiles: services with `profiles:` are deployed only when one of theirs is active. */
  profiles?: readonly string[];
}

export interface ComposeDeploy {
  id: string;
  name: string;
  replicas: number;
  strategy: string;
  spec: JsonObject;
}

export interface ComposeResult {
  deploys: ComposeDeploy[];
  warnings: string[];
}

// --- key tables -----------------------------------------------------------------------------------

const IGNORED_SERVICE_KEYS: Record<string, string> = {
  networks: 'shoal runs workloads without Compose networks',
  depends_on: 'deploys start independently; a service must retry until its dependencies answer',
  container_name: 'shoal names each replica itself',
  hostname: 'the engine default applies',
  domainname: 'the engine default applies',
  logging: 'the engine default logging applies',
  links: 'shoal runs workloads without Compose networks',
  external_links: 'shoal runs workloads without Compose networks',
  expose: 'informational only; use ports to publish',
  dns: 'the engine default applies',
  dns_search: 'the engine default applies',
  dns_opt: 'the engine default applies',
  extra_hosts: 'the engine default /etc/hosts applies',
  mac_address: 'the engine default applies',
  stop_signal: 'the engine default stop signal applies',
  tty: 'workloads run detached, without a terminal',
  stdin_open: 'workloads run detached, without stdin',
  init: 'the docker engine always runs an init process as PID 1',
  pull_policy: 'shoal never pulls: the image must already be on the host',
  platform: "the host's platform applies",
  annotations: 'not passed to the engine',
  attach: 'shoal does not attach to workloads',
};

const RUNTIME_OPTION = "not supported by shoal's engines: the workload would silently run without it";
const REJECTED_SERVICE_KEYS: Record<string, string> = {
  build: 'shoal never builds images: build the image, load it on the hosts and give image:',
  extends: 'not supported: use YAML anchors and merge keys (<<: *common) instead',
  env_file:
    'shoal reads the Compose file alone: put the variables under environment: (interpolation from the environment works)',
  label_file: 'shoal reads the Compose file alone: put the labels under labels:',
  secrets: 'shoal has no secret store yet: pass values through environment:',
  configs: 'shoal has no config store yet: mount a host path or pass values through environment:',
  network_mode: 'the engine decides the network namespace',
  pid: 'host namespaces are not supported (they escape the resource accounting)',
  ipc: 'host namespaces are not supported (they escape the resource accounting)',
  uts: 'host namespaces are not supported',
  userns_mode: 'host namespaces are not supported',
  cgroup: 'the engine decides the cgroup namespace',
  cgroup_parent: 'shoal places workloads in its own cgroups',
  volumes_from: 'replicas are placed independently, never next to another container: use a named volume',
  gpus: 'use deploy.resources.reservations.devices (count) or x-shoal.gpu',
  cpu_count: 'use deploy.resources (shoal allocates CPU itself)',
  cpu_percent: 'use deploy.resources (shoal allocates CPU itself)',
  cpu_shares: 'use deploy.resources (shoal allocates CPU itself)',
  cpu_quota: 'use deploy.resources (shoal allocates CPU itself)',
  cpu_period: 'use deploy.resources (shoal allocates CPU itself)',
  cpu_rt_period: 'use deploy.resources (shoal allocates CPU itself)',
  cpu_rt_runtime: 'use deploy.resources (shoal allocates CPU itself)',
  cpuset: 'use x-shoal.bindCores (shoal picks the cores)',
  privileged: RUNTIME_OPTION,
  cap_add: RUNTIME_OPTION,
  cap_drop: RUNTIME_OPTION,
  security_opt: RUNTIME_OPTION,
  devices: RUNTIME_OPTION,
  device_cgroup_rules: RUNTIME_OPTION,
  read_only: RUNTIME_OPTION,
  sysctls: RUNTIME_OPTION,
  ulimits: RUNTIME_OPTION,
  shm_size: RUNTIME_OPTION,
  group_add: RUNTIME_OPTION,
  runtime: RUNTIME_OPTION,
  isolation: RUNTIME_OPTION,
  storage_opt: RUNTIME_OPTION,
  oom_kill_disable: RUNTIME_OPTION,
  oom_score_adj: RUNTIME_OPTION,
  pids_limit: RUNTIME_OPTION,
  blkio_config: RUNTIME_OPTION,
  credential_spec: RUNTIME_OPTION,
  mem_swappiness: RUNTIME_OPTION,
  memswap_limit: RUNTIME_OPTION,
  post_start: 'use x-shoal.hooks.afterStart',
  pre_stop: 'use x-shoal.hooks.beforeStop',
  develop: 'a docker compose watch feature (local development only)',
  provider: 'a docker compose extension point, not a workload',
  models: 'a docker compose extension point, not a workload',
  use_api_socket: 'workloads do not get the engine socket',
};

const SUPPORTED_SERVICE_KEYS = [
  'image',
  'entrypoint',
  'command',
  'environment',
  'ports',
  'volumes',
  'tmpfs',
  'working_dir',
  'user',
  'labels',
  'healthcheck',
  'restart',
  'stop_grace_period',
  'deploy',
  'scale',
  'cpus',
  'mem_limit',
  'mem_reservation',
  'profiles',
  'x-shoal',
] as const;

const TOP_LEVEL_KEYS = [
  'services',
  'name',
  'volumes',
  'version',
  'networks',
  'secrets',
  'configs',
  'include',
];

const XSHOAL_KEYS = [
  'strategy',
  'engine',
  'gpu',
  'bindCores',
  'spread',
  'maxPerHost',
  'antiAffinity',
  'hostLimit',
  'hooks',
  'healthcheck',
  'job',
] as const;

// --- helpers ---------------------------------------------------------------------------------------

type Obj = { [k: string]: unknown };

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function show(v: unknown): string {
  if (v === null || v === undefined) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a map';
  if (typeof v === 'string') return JSON.stringify(v.length > 60 ? `${v.slice(0, 59)}…` : v);
  return String(v);
}

/** Path join for Compose paths: `services.api` + `deploy` → `services.api.deploy`. */
function at(base: string, ...keys: (string | number)[]): string {
  return joinPath(base, keys);
}

class Collector {
  readonly issues: ComposeIssue[] = [];
  readonly warnings: string[] = [];
  constructor(readonly file: string) {}
  error(path: string, message: string, service?: string): void {
    this.issues.push({ file: this.file, ...(service !== undefined ? { service } : {}), path, message });
  }
  warn(path: string, message: string): void {
    const w = `${this.file}: ${path}: ${message}`;
    if (!this.warnings.includes(w)) this.warnings.push(w);
  }
}

// --- interpolation -------------------------------------------------------------------------------

const VAR_NAME = /^[A-Za-z_][A-Za-z0-9_]*/;

class InterpolationError extends Error {}

/**
 * docker compose interpolation of one string: `$VAR`, `${VAR}`, `${VAR:-default}`,
 * `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`, `${VAR:+alt}`, `${VAR+alt}`, `$$` → `$`.
 * Defaults and alternatives may contain interpolations themselves. `unset(name)` is called for
 * a variable that is substituted as an empty string.
 */
export function interpolate(
  s: string,
  env: Readonly<Record<string, string | undefined>>,
  unset: (name: string) => void = () => {},
): string {
  let out = '';
  let i = 0;
  const get = (name: string): string | undefined => (Object.hasOwn(env, name) ? env[name] : undefined);
  while (i < s.length) {
    const c = s[i]!;
    if (c !== '$') {
      out += c;
      i++;
      continue;
    }
    const n = s[i + 1];
    if (n === '$') {
      out += '$';
      i += 2;
      continue;
    }
    if (n === '{') {
      // find the matching brace (nested ${...} in defaults)
      let depth = 1;
      let j = i + 2;
      while (j < s.length && depth > 0) {
        if (s[j] === '$' && s[j + 1] === '$') {
          j += 2;
          continue;
        }
        if (s[j] === '$' && s[j + 1] === '{') {
          depth++;
          j += 2;
          continue;
        }
        if (s[j] === '}') depth--;
        j++;
      }
      if (depth > 0) throw new InterpolationError(`unterminated "\${" in ${JSON.stringify(s)}`);
      const body = s.slice(i + 2, j - 1);
      out += substitute(body, env, get, unset);
      i = j;
      continue;
    }
    const m = VAR_NAME.exec(s.slice(i + 1));
    if (!m)
      throw new InterpolationError(
        `invalid interpolation in ${JSON.stringify(s)}: "$" must be followed by a variable name, "{" or another "$" (write $$ for a literal $)`,
      );
    const v = get(m[0]);
    if (v === undefined) unset(m[0]);
    out += v ?? '';
    i += 1 + m[0].length;
  }
  return out;
}

function substitute(
  body: string,
  env: Readonly<Record<string, string | undefined>>,
  get: (name: string) => string | undefined,
  unset: (name: string) => void,
): string {
  const m = VAR_NAME.exec(body);
  if (!m) throw new InterpolationError(`invalid interpolation "\${${body}}": expected a variable name`);
  const name = m[0];
  const rest = body.slice(name.length);
  const v = get(name);
  if (rest === '') {
    if (v === undefined) unset(name);
    return v ?? '';
  }
  const op = /^(:-|-|:\?|\?|:\+|\+)/.exec(rest)?.[0];
  if (op === undefined)
    throw new InterpolationError(
      `invalid interpolation "\${${body}}": expected \${${name}}, \${${name}:-default}, \${${name}-default}, \${${name}:?error}, \${${name}?error}, \${${name}:+alt} or \${${name}+alt}`,
    );
  const arg = rest.slice(op.length);
  const empty = v === undefined || v === '';
  switch (op) {
    case ':-':
      return empty ? interpolate(arg, env, unset) : (v as string);
    case '-':
      return v === undefined ? interpolate(arg, env, unset) : v;
    case ':?':
    case '?':
      if (op === ':?' ? empty : v === undefined) {
        const why = interpolate(arg, env, unset);
        throw new InterpolationError(
          `required variable ${name} is ${v === undefined ? 'missing' : 'empty'}${why ? `: ${why}` : ''}`,
        );
      }
      return v as string;
    case ':+':
      return empty ? '' : interpolate(arg, env, unset);
    default:
      return v === undefined ? '' : interpolate(arg, env, unset);
  }
}

/** Interpolate every string value of the tree (not keys), like docker compose. */
function interpolateTree(
  v: unknown,
  path: string,
  env: Readonly<Record<string, string | undefined>>,
  c: Collector,
): unknown {
  if (typeof v === 'string') {
    try {
      return interpolate(v, env, (name) =>
        c.warn(path, `variable ${name} is not set: substituting an empty string`),
      );
    } catch (e) {
      if (!(e instanceof InterpolationError)) throw e;
      c.error(path, e.message);
      return v;
    }
  }
  if (Array.isArray(v)) return v.map((x, i) => interpolateTree(x, at(path, i), env, c));
  if (isObj(v)) {
    const out: Obj = {};
    for (const [k, x] of Object.entries(v)) {
      // extension fields (x-*) at the top are templates for anchors: interpolated where used
      out[k] = interpolateTree(x, at(path, k), env, c);
    }
    return out;
  }
  return v;
}

// --- scalar parsers -----------------------------------------------------------------------------

/** POSIX shell words (no expansion): quotes, backslash escapes. Throws on an unterminated quote. */
export function shellSplit(s: string): string[] {
  const words: string[] = [];
  let cur = '';
  let inWord = false;
  let i = 0;
  while (i < s.length) {
    const ch = s[i]!;
    if (ch === ' ' || ch === '\t' || ch === '\n') {
      if (inWord) words.push(cur);
      cur = '';
      inWord = false;
      i++;
    } else if (ch === '\\') {
      if (s[i + 1] === '\n') {
        i += 2;
        continue;
      }
      if (i + 1 < s.length) cur += s[i + 1];
      inWord = true;
      i += 2;
    } else if (ch === "'") {
      const end = s.indexOf("'", i + 1);
      if (end < 0) throw new Error(`unterminated single quote in ${JSON.stringify(s)}`);
      cur += s.slice(i + 1, end);
      inWord = true;
      i = end + 1;
    } else if (ch === '"') {
      let j = i + 1;
      for (;;) {
        if (j >= s.length) throw new Error(`unterminated double quote in ${JSON.stringify(s)}`);
        const d = s[j]!;
        if (d === '"') break;
        if (d === '\\' && j + 1 < s.length && '$`"\\\n'.includes(s[j + 1]!)) {
          if (s[j + 1] !== '\n') cur += s[j + 1];
          j += 2;
          continue;
        }
        cur += d;
        j++;
      }
      inWord = true;
      i = j + 1;
    } else {
      cur += ch;
      inWord = true;
      i++;
    }
  }
  if (inWord) words.push(cur);
  return words;
}

const DURATION_RE = /^(?:(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))+$/;
const DURATION_PART = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/g;
const UNIT_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  μs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/** A Go duration ("1m30s", "500ms", "1.5h", "0") in whole milliseconds (rounded); null if invalid. */
export function parseDuration(v: unknown): number | null {
  if (v === 0 || v === '0') return 0;
  if (typeof v !== 'string' || !DURATION_RE.test(v)) return null;
  let ms = 0;
  for (const m of v.matchAll(DURATION_PART)) ms += Number(m[1]) * UNIT_MS[m[2]!]!;
  return Math.round(ms);
}

const SIZE_RE = /^(\d+(?:\.\d+)?) ?([kmgtp])?i?b?$/i;
const SIZE_UNIT: Record<string, number> = { k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50 };

/** A size like docker's ("512M", "1.5g", "100kb", "1024", 1024) in bytes (1k = 1024); null if invalid. */
export function parseSize(v: unknown): number | null {
  if (typeof v === 'number') return Number.isSafeInteger(v) && v >= 0 ? v : null;
  if (typeof v !== 'string') return null;
  const m = SIZE_RE.exec(v.trim());
  if (!m) return null;
  const unit = m[2] ? SIZE_UNIT[m[2].toLowerCase()]! : 1;
  const n = Math.floor(Number(m[1]) * unit);
  return Number.isSafeInteger(n) ? n : null;
}

/** Compose `cpus` ("0.5", 2) → millicores. */
function parseCpus(v: unknown): number | null {
  const n =
    typeof v === 'number' ? v : typeof v === 'string' && /^\d+(\.\d+)?$/.test(v.trim()) ? Number(v) : NaN;
  if (!Number.isFinite(n) || n < 0) return null;
  const milli = Math.round(n * 1000);
  return Number.isSafeInteger(milli) ? milli : null;
}

// --- the per-service mapper -----------------------------------------------------------------------

interface TopVolume {
  /** Engine volume name. */
  name: string;
  sizeBytes?: number;
}

interface Ctx {
  c: Collector;
  env: Readonly<Record<string, string | undefined>>;
  project: string | undefined;
  volumes: Map<string, TopVolume>;
}

/** Where a spec path came from in the file; `pass` = sub-paths are the same on both sides. */
interface Origin {
  spec: string;
  file: string;
  pass: boolean;
}

class ServiceMapper {
  readonly spec: Obj = {};
  readonly origins: Origin[] = [];
  strategy = 'binpack';
  replicas = 1;
  private readonly base: string;

  constructor(
    private readonly ctx: Ctx,
    readonly service: string,
    private readonly svc: Obj,
  ) {
    this.base = at('services', service);
  }

  private err(path: string, message: string): void {
    this.ctx.c.error(path, message, this.service);
  }
  private warn(path: string, message: string): void {
    this.ctx.c.warn(path, message);
  }
  private origin(spec: string, file: string, pass = false): void {
    this.origins.push({ spec, file, pass });
  }

  /** A nested map with only `allowed` keys; unknown keys are errors. Returns undefined if not a map. */
  private map(
    v: unknown,
    path: string,
    allowed: readonly string[],
    ignored: Record<string, string> = {},
  ): Obj | undefined {
    if (!isObj(v)) {
      this.err(path, `expected a map, got ${show(v)}`);
      return undefined;
    }
    for (const k of Object.keys(v)) {
      if (allowed.includes(k)) continue;
      if (Object.hasOwn(ignored, k)) this.warn(at(path, k), `ignored: ${ignored[k]}`);
      else this.err(at(path, k), `unknown key (supported: ${allowed.join(', ')})`);
    }
    return v;
  }

  private string(v: unknown, path: string): string | undefined {
    if (typeof v === 'string') return v;
    if (typeof v === 'number' || typeof v === 'boolean') return String(v);
    this.err(path, `expected a string, got ${show(v)}`);
    return undefined;
  }

  private int(v: unknown, path: string, min: number, max: number): number | undefined {
    const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
    if (typeof n === 'number' && Number.isSafeInteger(n) && n >= min && n <= max) return n;
    this.err(path, `expected an integer in ${min}..${max}, got ${show(v)}`);
    return undefined;
  }

  private duration(v: unknown, path: string, min = 0): number | undefined {
    const ms = parseDuration(v);
    if (ms === null) {
      this.err(path, `expected a duration like 1m30s, got ${show(v)}`);
      return undefined;
    }
    if (ms > MAX_DURATION_MS) {
      this.err(path, `at most 24h, got ${show(v)}`);
      return undefined;
    }
    if (ms < min) {
      this.err(path, `at least ${min}ms, got ${show(v)}`);
      return undefined;
    }
    return ms;
  }

  private size(v: unknown, path: string): number | undefined {
    const n = parseSize(v);
    if (n === null) this.err(path, `expected a size like 512M, got ${show(v)}`);
    return n ?? undefined;
  }

  private argv(v: unknown, path: string): string[] | undefined {
    if (typeof v === 'string') {
      try {
        return shellSplit(v);
      } catch (e) {
        this.err(path, (e as Error).message);
        return undefined;
      }
    }
    if (Array.isArray(v)) {
      const out: string[] = [];
      v.forEach((x, i) => {
        const s = this.string(x, at(path, i));
        if (s !== undefined) out.push(s);
      });
      return out.length === v.length ? out : undefined;
    }
    this.err(path, `expected a string or a list of strings, got ${show(v)}`);
    return undefined;
  }

  /** list ["K=V", "K"] or map {K: V}: [key, value | null, path]. */
  private pairs(v: unknown, path: string): [string, string | null, string][] {
    const out: [string, string | null, string][] = [];
    if (Array.isArray(v)) {
      v.forEach((x, i) => {
        const p = at(path, i);
        if (typeof x !== 'string') {
          this.err(p, `expected "KEY=value", got ${show(x)}`);
          return;
        }
        const eq = x.indexOf('=');
        out.push(eq < 0 ? [x, null, p] : [x.slice(0, eq), x.slice(eq + 1), p]);
      });
    } else if (isObj(v)) {
      for (const [k, x] of Object.entries(v)) {
        const p = at(path, k);
        if (x === null) out.push([k, null, p]);
        else if (typeof x === 'string' || typeof x === 'number' || typeof x === 'boolean')
          out.push([k, String(x), p]);
        else this.err(p, `expected a string, number or boolean, got ${show(x)}`);
      }
    } else {
      this.err(path, `expected a list of "KEY=value" or a map, got ${show(v)}`);
    }
    return out;
  }

  run(): void {
    const s = this.svc;
    const b = this.base;
    for (const k of Object.keys(s)) {
      if ((SUPPORTED_SERVICE_KEYS as readonly string[]).includes(k)) continue;
      if (k.startsWith('x-')) continue; // extension fields: ignored, as docker compose does
      if (Object.hasOwn(IGNORED_SERVICE_KEYS, k)) this.warn(at(b, k), `ignored: ${IGNORED_SERVICE_KEYS[k]}`);
      else if (Object.hasOwn(REJECTED_SERVICE_KEYS, k))
        this.err(at(b, k), `not supported: ${REJECTED_SERVICE_KEYS[k]}`);
      else this.err(at(b, k), 'unknown Compose service key');
    }
    const x = s['x-shoal'] === undefined ? {} : this.map(s['x-shoal'], at(b, 'x-shoal'), XSHOAL_KEYS);
    const xs = x ?? {};

    if (s.image !== undefined) {
      const image = this.string(s.image, at(b, 'image'));
      if (image !== undefined) this.set('image', image, at(b, 'image'));
    }
    if (xs.engine !== undefined) this.set('engine', xs.engine as Json, at(b, 'x-shoal', 'engine'));
    if (s.image === undefined && xs.engine !== 'process')
      this.err(
        at(b, 'image'),
        'required: shoal never builds images (or set x-shoal.engine: process with an entrypoint)',
      );
    if (s.entrypoint !== undefined && s.entrypoint !== null) {
      const cmd = this.argv(s.entrypoint, at(b, 'entrypoint'));
      if (cmd?.length === 0)
        this.err(at(b, 'entrypoint'), 'an empty entrypoint is not supported: give the command to run');
      else if (cmd) this.set('command', cmd, at(b, 'entrypoint'), true);
    }
    if (s.command !== undefined && s.command !== null) {
      const args = this.argv(s.command, at(b, 'command'));
      if (args) this.set('args', args, at(b, 'command'), true);
    }
    if (s.environment !== undefined) this.environment(s.environment, at(b, 'environment'));
    if (s.working_dir !== undefined) {
      const w = this.string(s.working_dir, at(b, 'working_dir'));
      if (w !== undefined) this.set('workdir', w, at(b, 'working_dir'));
    }
    if (s.user !== undefined) {
      const u = this.string(s.user, at(b, 'user'));
      if (u !== undefined) this.set('user', u, at(b, 'user'));
    }
    if (s.labels !== undefined) {
      const labels: Record<string, string> = {};
      for (const [k, v, p] of this.pairs(s.labels, at(b, 'labels'))) {
        labels[k] = v ?? '';
        this.origin(at('spec.labels', k), p);
      }
      this.set('labels', labels, at(b, 'labels'), true);
    }
    if (s.ports !== undefined) this.ports(s.ports, at(b, 'ports'));
    this.volumes(s.volumes, s.tmpfs);
    this.healthcheck(s.healthcheck, xs.healthcheck);
    this.restart(s.restart, s.deploy);
    if (s.stop_grace_period !== undefined) {
      const ms = this.duration(s.stop_grace_period, at(b, 'stop_grace_period'));
      if (ms !== undefined) this.set('stopTimeoutMs', ms, at(b, 'stop_grace_period'));
    }
    if (xs.hooks !== undefined) this.set('hooks', xs.hooks as Json, at(b, 'x-shoal', 'hooks'), true);
    this.deploy(s.deploy, xs);
  }

  private set(key: string, value: Json, file: string, pass = false): void {
    this.spec[key] = value;
    this.origin(`spec.${key}`, file, pass);
  }

  private environment(v: unknown, path: string): void {
    const env: Record<string, string> = {};
    for (const [k, val, p] of this.pairs(v, path)) {
      if (val !== null) env[k] = val;
      else {
        const from = Object.hasOwn(this.ctx.env, k) ? this.ctx.env[k] : undefined;
        if (from === undefined) {
          this.warn(p, `${k} is not set in the environment: left out`);
          continue;
        }
        env[k] = from;
      }
      this.origin(at('spec.env', k), p);
    }
    this.set('env', env, path);
  }

  private ports(v: unknown, path: string): void {
    if (!Array.isArray(v)) {
      this.err(path, `expected a list, got ${show(v)}`);
      return;
    }
    const out: Obj[] = [];
    v.forEach((p, i) => {
      const pp = at(path, i);
      const first = out.length;
      if (typeof p === 'string' || typeof p === 'number') this.shortPort(String(p), pp, out);
      else if (isObj(p)) this.longPort(p, pp, out);
      else this.err(pp, `expected "8080:80", a port number or a map, got ${show(p)}`);
      for (let j = first; j < out.length; j++) this.origin(`spec.ports[${j}]`, pp, true);
    });
    if (out.length > MAX_LIST_ITEMS)
      this.err(path, `at most ${MAX_LIST_ITEMS} ports (after expanding ranges)`);
    this.set('ports', out as Json, path);
  }

  /**
   * Published ports run with host networking (docs/spec.md): the container listens on the host
   * port itself. A mapping to another port, or a host IP, cannot be honoured and is an error (never
   * silently changed); `0.0.0.0` / `::` (every address) is what host networking gives anyway.
   * Without a published port the host port is the container port (a warning says so: docker
   * compose would pick a random one).
   */
  private hostPort(
    entry: { target: number; published?: number; hostIp?: string },
    path: string,
    where: { published: string; hostIp: string },
    text?: string,
  ): boolean {
    let ok = true;
    const { target, published } = entry;
    if (published !== undefined && published !== target) {
      this.err(
        where.published,
        `${text ? `${JSON.stringify(text)} ` : ''}maps host port ${published} to container port ${target}: ` +
          'shoal publishes ports with host networking (no port mapping), so the container listens on ' +
          `the host port itself — use "${target}:${target}", or make the service listen on ${published} ` +
          `and use "${published}:${published}"`,
      );
      ok = false;
    }
    if (entry.hostIp !== undefined && entry.hostIp !== '0.0.0.0' && entry.hostIp !== '::') {
      this.err(
        where.hostIp,
        `host IP ${entry.hostIp}: not supported: shoal publishes ports with host networking, so the ` +
          `service itself chooses the address it listens on (configure it to listen on ${entry.hostIp})`,
      );
      ok = false;
    }
    if (ok && published === undefined)
      this.warn(
        path,
        `no published port: with host networking the service is reachable on host port ${target} ` +
          '(docker compose would pick a random host port)',
      );
    return ok;
  }

  private range(s: string, path: string, what: string): [number, number] | undefined {
    const m = /^(\d+)(?:-(\d+))?$/.exec(s);
    const lo = m ? Number(m[1]) : NaN;
    const hi = m?.[2] !== undefined ? Number(m[2]) : lo;
    if (!m || lo < 1 || hi > 65_535 || lo > hi) {
      this.err(path, `expected a ${what} port (1..65535) or range like 8000-8010, got ${JSON.stringify(s)}`);
      return undefined;
    }
    return [lo, hi];
  }

  private shortPort(s: string, path: string, out: Obj[]): void {
    let rest = s;
    let protocol = 'tcp';
    const slash = rest.lastIndexOf('/');
    if (slash >= 0) {
      protocol = rest.slice(slash + 1);
      rest = rest.slice(0, slash);
      if (protocol !== 'tcp' && protocol !== 'udp') {
        this.err(path, `protocol: expected tcp or udp, got ${JSON.stringify(protocol)}`);
        return;
      }
    }
    let hostIp: string | undefined;
    let parts: string[];
    const v6 = /^\[([^\]]+)\]:(.*)$/.exec(rest);
    if (v6) {
      hostIp = v6[1];
      parts = v6[2]!.split(':');
      if (parts.length !== 2) {
        this.err(path, `expected "[ip]:published:target", got ${JSON.stringify(s)}`);
        return;
      }
    } else {
      parts = rest.split(':');
      if (parts.length > 3) {
        hostIp = parts.slice(0, -2).join(':');
        parts = parts.slice(-2);
      } else if (parts.length === 3) {
        hostIp = parts[0];
        parts = parts.slice(1);
      }
    }
    const target = this.range(parts.at(-1)!, path, 'container');
    if (!target) return;
    let published: [number, number] | undefined;
    if (parts.length === 2 && parts[0] !== '') {
      published = this.range(parts[0]!, path, 'published');
      if (!published) return;
    }
    const n = target[1] - target[0];
    if (published && published[1] - published[0] !== n) {
      this.err(
        path,
        n === 0
          ? `a published range needs a container range of the same length (shoal does not pick a port from a range): ${JSON.stringify(s)}`
          : `published and container ranges differ in length: ${JSON.stringify(s)}`,
      );
      return;
    }
    const first = { target: target[0], ...(published ? { published: published[0] } : {}) };
    const where = { published: path, hostIp: path };
    if (!this.hostPort({ ...first, ...(hostIp ? { hostIp } : {}) }, path, where, s)) return;
    for (let k = 0; k <= n; k++) {
      out.push({
        target: target[0] + k,
        ...(published ? { published: published[0] + k } : {}),
        protocol,
      });
    }
  }

  private longPort(p: Obj, path: string, out: Obj[]): void {
    const o = this.map(p, path, [
      'target',
      'published',
      'host_ip',
      'protocol',
      'mode',
      'name',
      'app_protocol',
    ]);
    if (!o) return;
    if (o.mode !== undefined && o.mode !== 'host' && o.mode !== 'ingress')
      this.err(at(path, 'mode'), `expected host or ingress, got ${show(o.mode)}`);
    for (const k of ['mode', 'name', 'app_protocol'])
      if (o[k] !== undefined) this.warn(at(path, k), 'ignored: informational for shoal');
    const target = this.int(o.target, at(path, 'target'), 1, 65_535);
    const published =
      o.published === undefined ? undefined : this.int(o.published, at(path, 'published'), 1, 65_535);
    if (target === undefined || (o.published !== undefined && published === undefined)) return;
    const protocol = o.protocol ?? 'tcp';
    if (protocol !== 'tcp' && protocol !== 'udp') {
      this.err(at(path, 'protocol'), `expected tcp or udp, got ${show(protocol)}`);
      return;
    }
    const hostIp = o.host_ip === undefined ? undefined : this.string(o.host_ip, at(path, 'host_ip'));
    const entry = {
      target,
      ...(published !== undefined ? { published } : {}),
      ...(hostIp !== undefined ? { hostIp } : {}),
    };
    const where = { published: at(path, 'published'), hostIp: at(path, 'host_ip') };
    if (!this.hostPort(entry, path, where)) return;
    out.push({ target, ...(published !== undefined ? { published } : {}), protocol });
  }

  private volumes(v: unknown, tmpfs: unknown): void {
    const b = this.base;
    const out: Obj[] = [];
    const add = (m: Obj, path: string, pass: boolean) => {
      this.origin(`spec.volumes[${out.length}]`, path, pass);
      out.push(m);
    };
    if (v !== undefined) {
      const path = at(b, 'volumes');
      if (!Array.isArray(v)) this.err(path, `expected a list, got ${show(v)}`);
      else
        v.forEach((x, i) => {
          const p = at(path, i);
          if (typeof x === 'string') {
            const m = this.shortVolume(x, p);
            if (m) add(m, p, false);
          } else if (isObj(x)) {
            const m = this.longVolume(x, p);
            if (m) add(m, p, false);
          } else this.err(p, `expected "source:target[:ro]" or a map, got ${show(x)}`);
        });
    }
    if (tmpfs !== undefined) {
      const path = at(b, 'tmpfs');
      const list = typeof tmpfs === 'string' ? [tmpfs] : tmpfs;
      if (!Array.isArray(list)) this.err(path, `expected a path or a list of paths, got ${show(tmpfs)}`);
      else
        list.forEach((x, i) => {
          const p = typeof tmpfs === 'string' ? path : at(path, i);
          if (typeof x !== 'string') {
            this.err(p, `expected a path, got ${show(x)}`);
            return;
          }
          const colon = x.indexOf(':');
          const target = colon < 0 ? x : x.slice(0, colon);
          const m: Obj = { type: 'tmpfs', target, readOnly: false };
          if (colon >= 0)
            for (const opt of x.slice(colon + 1).split(',')) {
              const [k, val] = opt.split('=', 2);
              if (k === 'size') {
                const n = this.size(val, p);
                if (n !== undefined) m.sizeBytes = n;
              } else if (k === 'mode' || k === 'uid' || k === 'gid')
                this.warn(p, `ignored tmpfs option ${k}`);
              else this.err(p, `unknown tmpfs option ${JSON.stringify(k)} (supported: size)`);
            }
          add(m, p, false);
        });
    }
    if (out.length > 0) this.spec.volumes = out as Json;
  }

  private named(name: string, path: string): TopVolume | undefined {
    const vol = this.ctx.volumes.get(name);
    if (!vol)
      this.err(path, `named volume ${JSON.stringify(name)} is not declared under the top-level volumes: key`);
    return vol;
  }

  private bindSource(src: string, path: string): boolean {
    if (src.startsWith('/')) return true;
    this.err(
      path,
      `bind source ${JSON.stringify(src)} must be an absolute host path: a relative path would be resolved on whichever host runs the replica`,
    );
    return false;
  }

  private shortVolume(s: string, path: string): Obj | undefined {
    const parts = s.split(':');
    if (parts.length === 1) return { type: 'volume', target: s, readOnly: false };
    if (parts.length > 3) {
      this.err(path, `expected "source:target[:mode]", got ${JSON.stringify(s)}`);
      return undefined;
    }
    const [src, target, mode] = parts as [string, string, string | undefined];
    let readOnly = false;
    for (const m of mode ? mode.split(',') : []) {
      if (m === 'ro') readOnly = true;
      else if (m === 'rw') readOnly = false;
      else if (m === 'z' || m === 'Z' || m === 'nocopy') this.warn(path, `ignored mode ${m}`);
      else {
        this.err(path, `unsupported mode ${JSON.stringify(m)} (supported: ro, rw)`);
        return undefined;
      }
    }
    const isPath = src.startsWith('/') || src.startsWith('.') || src.startsWith('~');
    if (isPath)
      return this.bindSource(src, path) ? { type: 'bind', source: src, target, readOnly } : undefined;
    const vol = this.named(src, path);
    if (!vol) return undefined;
    return {
      type: 'volume',
      source: vol.name,
      target,
      readOnly,
      ...(vol.sizeBytes ? { sizeBytes: vol.sizeBytes } : {}),
    };
  }

  private longVolume(x: Obj, path: string): Obj | undefined {
    const o = this.map(x, path, [
      'type',
      'source',
      'target',
      'read_only',
      'bind',
      'volume',
      'tmpfs',
      'consistency',
    ]);
    if (!o) return undefined;
    const type = o.type;
    if (type !== 'bind' && type !== 'volume' && type !== 'tmpfs') {
      this.err(
        at(path, 'type'),
        `expected bind, volume or tmpfs, got ${show(type)}${type === 'npipe' || type === 'cluster' || type === 'image' ? ' (not supported by shoal)' : ''}`,
      );
      return undefined;
    }
    const target = this.string(o.target, at(path, 'target'));
    if (target === undefined) return undefined;
    if (o.read_only !== undefined && typeof o.read_only !== 'boolean')
      this.err(at(path, 'read_only'), `expected true or false, got ${show(o.read_only)}`);
    const m: Obj = { type, target, readOnly: o.read_only === true };
    if (o.consistency !== undefined) this.warn(at(path, 'consistency'), 'ignored');
    for (const sub of ['bind', 'volume', 'tmpfs'] as const) {
      if (o[sub] === undefined) continue;
      if (sub !== type) {
        this.err(at(path, sub), `only for type ${sub}`);
        continue;
      }
      const so = this.map(
        o[sub],
        at(path, sub),
        sub === 'bind'
          ? ['propagation', 'create_host_path', 'selinux']
          : sub === 'volume'
            ? ['nocopy', 'subpath']
            : ['size', 'mode'],
      );
      if (!so) continue;
      for (const [k, val] of Object.entries(so)) {
        const kp = at(path, sub, k);
        if (sub === 'tmpfs' && k === 'size') {
          const n = this.size(val, kp);
          if (n !== undefined) m.sizeBytes = n;
        } else if (k === 'subpath') this.err(kp, 'not supported: mount the whole volume');
        else this.warn(kp, 'ignored');
      }
    }
    if (type === 'tmpfs') {
      if (o.source !== undefined) this.err(at(path, 'source'), 'a tmpfs mount has no source');
      return m;
    }
    if (o.source === undefined) {
      if (type === 'bind') {
        this.err(at(path, 'source'), 'required for a bind mount');
        return undefined;
      }
      return m;
    }
    const src = this.string(o.source, at(path, 'source'));
    if (src === undefined) return undefined;
    if (type === 'bind') return this.bindSource(src, at(path, 'source')) ? { ...m, source: src } : undefined;
    const vol = this.named(src, at(path, 'source'));
    return vol
      ? { ...m, source: vol.name, ...(vol.sizeBytes ? { sizeBytes: vol.sizeBytes } : {}) }
      : undefined;
  }

  private healthcheck(hc: unknown, xhc: unknown): void {
    const b = this.base;
    let check: Obj | undefined;
    if (hc !== undefined && hc !== null) {
      const path = at(b, 'healthcheck');
      const o = this.map(
        hc,
        path,
        ['test', 'interval', 'timeout', 'start_period', 'start_interval', 'retries', 'disable'],
        {},
      );
      if (!o) return;
      if (o.start_interval !== undefined)
        this.warn(at(path, 'start_interval'), 'ignored: shoal probes at interval from the start');
      if (o.disable !== undefined && typeof o.disable !== 'boolean')
        this.err(at(path, 'disable'), `expected true or false, got ${show(o.disable)}`);
      let command: string[] | undefined;
      const t = o.test;
      const tp = at(path, 'test');
      const disabled = o.disable === true || (Array.isArray(t) && t[0] === 'NONE');
      if (!disabled) {
        if (typeof t === 'string') command = ['/bin/sh', '-c', t];
        else if (Array.isArray(t) && t.every((a) => typeof a === 'string')) {
          if (t[0] === 'CMD' && t.length > 1) command = t.slice(1) as string[];
          else if (t[0] === 'CMD-SHELL' && t.length === 2) command = ['/bin/sh', '-c', t[1] as string];
          else
            this.err(
              tp,
              'expected ["CMD", "prog", "arg", ...], ["CMD-SHELL", "command line"], ["NONE"] or a command line',
            );
        } else if (t === undefined) this.err(tp, 'required (the image HEALTHCHECK is not used by shoal)');
        else this.err(tp, `expected a list or a string, got ${show(t)}`);
        if (command) {
          check = { type: 'exec', command };
          this.origin('spec.healthcheck', path);
          this.origin('spec.healthcheck.command', tp);
          const timing: [string, string, number][] = [
            ['interval', 'interval', 1],
            ['timeout', 'timeout', 1],
            ['start_period', 'startPeriod', 0],
          ];
          for (const [ck, sk, min] of timing) {
            if (o[ck] === undefined) continue;
            const ms = this.duration(o[ck], at(path, ck), min);
            if (ms !== undefined) check[sk] = ms;
          }
          if (o.retries !== undefined) {
            const n = this.int(o.retries, at(path, 'retries'), 1, 1000);
            if (n !== undefined) check.retries = n;
          }
        }
      }
    }
    if (xhc !== undefined && xhc !== null) {
      if (check) {
        this.err(
          at(b, 'x-shoal', 'healthcheck'),
          'a service has one health check: remove healthcheck: or x-shoal.healthcheck',
        );
        return;
      }
      this.set('healthcheck', xhc as Json, at(b, 'x-shoal', 'healthcheck'), true);
      return;
    }
    if (check) this.spec.healthcheck = check as Json;
  }

  private restart(r: unknown, deploy: unknown): void {
    const b = this.base;
    let policy: { restart?: string; maxAttempts?: number; from?: string } = {};
    if (r !== undefined) {
      const path = at(b, 'restart');
      const m = typeof r === 'string' ? /^(no|always|unless-stopped|on-failure)(?::(\d+))?$/.exec(r) : null;
      if (!m || (m[2] !== undefined && m[1] !== 'on-failure'))
        this.err(path, `expected no, always, on-failure[:N] or unless-stopped, got ${show(r)}`);
      else {
        policy = { restart: m[1] === 'unless-stopped' ? 'always' : m[1]!, from: path };
        if (m[2] !== undefined) {
          const n = this.int(Number(m[2]), path, 1, 1000);
          if (n !== undefined) policy.maxAttempts = n;
        }
      }
    }
    const rp = isObj(deploy) ? deploy.restart_policy : undefined;
    const rpol: Obj = {};
    if (rp !== undefined) {
      const path = at(b, 'deploy', 'restart_policy');
      const o = this.map(rp, path, ['condition', 'delay', 'max_attempts', 'window']);
      if (o) {
        if (o.condition !== undefined) {
          const cond = { none: 'no', 'on-failure': 'on-failure', any: 'always' }[String(o.condition)];
          if (typeof o.condition !== 'string' || !cond)
            this.err(at(path, 'condition'), `expected none, on-failure or any, got ${show(o.condition)}`);
          else if (policy.restart !== undefined && policy.restart !== cond)
            this.err(at(path, 'condition'), `contradicts restart: ${show(r)} (give one of them)`);
          else policy = { ...policy, restart: cond, from: at(path, 'condition') };
        }
        if (o.delay !== undefined) {
          const ms = this.duration(o.delay, at(path, 'delay'));
          if (ms !== undefined) rpol.delayMs = ms;
          this.origin('spec.restartPolicy.delayMs', at(path, 'delay'));
        }
        if (o.max_attempts !== undefined) {
          if (policy.maxAttempts !== undefined)
            this.err(at(path, 'max_attempts'), 'given twice (also in restart: on-failure:N)');
          const n = this.int(o.max_attempts, at(path, 'max_attempts'), 1, 1000);
          if (n !== undefined) policy.maxAttempts = n;
        }
        if (o.window !== undefined) {
          const ms = this.duration(o.window, at(path, 'window'), 1);
          if (ms !== undefined) rpol.windowMs = ms;
        }
      }
    }
    if (policy.restart !== undefined) this.set('restart', policy.restart, policy.from!);
    if (policy.maxAttempts !== undefined) rpol.maxAttempts = policy.maxAttempts;
    if (Object.keys(rpol).length > 0)
      this.set('restartPolicy', rpol as Json, at(b, 'deploy', 'restart_policy'));
  }

  private deploy(d: unknown, xs: Obj): void {
    const b = this.base;
    const dp = at(b, 'deploy');
    const o =
      d === undefined
        ? {}
        : this.map(
            d,
            dp,
            [
              'mode',
              'replicas',
              'resources',
              'placement',
              'restart_policy',
              'update_config',
              'rollback_config',
            ],
            {
              labels: 'these are service labels in swarm; use labels: for the workload',
              endpoint_mode: 'shoal has no virtual IPs',
            },
          );
    if (!o) return;
    const xp = (k: string) => at(b, 'x-shoal', k);

    // mode, replicas, strategy
    const mode = o.mode ?? 'replicated';
    if (!['replicated', 'global', 'replicated-job', 'global-job'].includes(String(mode)))
      this.err(
        at(dp, 'mode'),
        `expected replicated, global, replicated-job or global-job, got ${show(mode)}`,
      );
    const global = mode === 'global' || mode === 'global-job';
    if (xs.strategy !== undefined) {
      if (typeof xs.strategy !== 'string' || !(STRATEGIES as readonly string[]).includes(xs.strategy))
        this.err(xp('strategy'), `expected one of ${STRATEGIES.join(', ')}, got ${show(xs.strategy)}`);
      else if (global && xs.strategy !== 'each')
        this.err(
          xp('strategy'),
          `contradicts deploy.mode: ${mode} (which is strategy each, one replica per host)`,
        );
      else this.strategy = xs.strategy;
    }
    if (global) this.strategy = 'each';
    const scale = this.svc.scale;
    if (o.replicas !== undefined) {
      if (global) this.err(at(dp, 'replicas'), `not allowed with mode ${mode} (one replica per host)`);
      const n = this.int(o.replicas, at(dp, 'replicas'), 0, 10_000);
      if (n !== undefined) this.replicas = n;
      if (scale !== undefined && scale !== o.replicas)
        this.err(at(b, 'scale'), `contradicts deploy.replicas: ${show(o.replicas)}`);
    } else if (scale !== undefined) {
      if (global) this.err(at(b, 'scale'), `not allowed with mode ${mode} (one replica per host)`);
      const n = this.int(scale, at(b, 'scale'), 0, 10_000);
      if (n !== undefined) this.replicas = n;
    }
    if (mode === 'replicated-job' || mode === 'global-job' || xs.job !== undefined) {
      const job: Obj = {};
      if (xs.job !== undefined) {
        const jo = this.map(xs.job, xp('job'), ['retries', 'backoff']);
        if (jo?.retries !== undefined) {
          const n = this.int(jo.retries, at(xp('job'), 'retries'), 0, 1000);
          if (n !== undefined) job.retries = n;
        }
        if (jo?.backoff !== undefined) {
          const ms = this.duration(jo.backoff, at(xp('job'), 'backoff'));
          if (ms !== undefined) job.backoffMs = ms;
        }
      }
      this.set('job', job as Json, xs.job !== undefined ? xp('job') : at(dp, 'mode'));
    }

    this.resources(o.resources, xs);
    this.placement(o.placement, xs);
    for (const [ck, sk] of [
      ['update_config', 'update'],
      ['rollback_config', 'rollbackConfig'],
    ] as const) {
      if (o[ck] === undefined) continue;
      const path = at(dp, ck);
      const u = this.map(o[ck], path, [
        'parallelism',
        'delay',
        'failure_action',
        'monitor',
        'max_failure_ratio',
        'order',
      ]);
      if (!u) continue;
      const out: Obj = {};
      if (u.parallelism !== undefined) {
        const n = this.int(u.parallelism, at(path, 'parallelism'), 0, 10_000);
        if (n !== undefined) out.parallelism = n;
      }
      for (const [from, to] of [
        ['delay', 'delayMs'],
        ['monitor', 'monitorMs'],
      ] as const) {
        if (u[from] === undefined) continue;
        const ms = this.duration(u[from], at(path, from));
        if (ms !== undefined) out[to] = ms;
      }
      const actions = ck === 'update_config' ? ['rollback', 'pause', 'continue'] : ['pause', 'continue'];
      if (u.failure_action !== undefined) {
        if (typeof u.failure_action !== 'string' || !actions.includes(u.failure_action))
          this.err(
            at(path, 'failure_action'),
            `expected ${actions.join(', ')}, got ${show(u.failure_action)}`,
          );
        else out.failureAction = u.failure_action;
      }
      if (u.max_failure_ratio !== undefined) {
        const r = u.max_failure_ratio;
        if (typeof r !== 'number' || !(r >= 0 && r <= 1))
          this.err(at(path, 'max_failure_ratio'), `expected a number in 0..1, got ${show(r)}`);
        else out.maxFailureRatio = r;
      }
      if (u.order !== undefined) {
        if (u.order !== 'stop-first' && u.order !== 'start-first')
          this.err(at(path, 'order'), `expected stop-first or start-first, got ${show(u.order)}`);
        else out.order = u.order;
      }
      this.set(sk, out as Json, path);
    }
  }

  private resources(r: unknown, xs: Obj): void {
    const b = this.base;
    const rp = at(b, 'deploy', 'resources');
    const o = r === undefined ? {} : this.map(r, rp, ['limits', 'reservations']);
    if (!o) return;
    const read = (which: 'limits' | 'reservations') => {
      const path = at(rp, which);
      const out: { cpu?: number; memory?: number; gpus?: number } = {};
      if (o[which] === undefined) return out;
      const allowed =
        which === 'limits' ? ['cpus', 'memory', 'pids'] : ['cpus', 'memory', 'devices', 'generic_resources'];
      const m = this.map(o[which], path, allowed);
      if (!m) return out;
      if (m.cpus !== undefined) {
        const milli = parseCpus(m.cpus);
        if (milli === null)
          this.err(at(path, 'cpus'), `expected a number of CPUs like 0.5, got ${show(m.cpus)}`);
        else out.cpu = milli;
      }
      if (m.memory !== undefined) out.memory = this.size(m.memory, at(path, 'memory'));
      if (m.pids !== undefined) this.err(at(path, 'pids'), `not supported: ${RUNTIME_OPTION}`);
      if (m.generic_resources !== undefined)
        this.err(
          at(path, 'generic_resources'),
          'not supported: shoal allocates CPU, memory, disk and GPUs only',
        );
      if (m.devices !== undefined) out.gpus = this.devices(m.devices, at(path, 'devices'));
      return out;
    };
    const lim = read('limits');
    const res = read('reservations');
    // legacy v2 keys as fallbacks
    const legacy = (
      key: string,
      into: { cpu?: number; memory?: number },
      dim: 'cpu' | 'memory',
      deployKey: string,
    ) => {
      const v = this.svc[key];
      if (v === undefined) return;
      const path = at(b, key);
      if (into[dim] !== undefined) {
        this.err(path, `given twice (also deploy.resources.${deployKey})`);
        return;
      }
      if (dim === 'cpu') {
        const milli = parseCpus(v);
        if (milli === null) this.err(path, `expected a number of CPUs like 0.5, got ${show(v)}`);
        else into.cpu = milli;
      } else into.memory = this.size(v, path);
    };
    legacy('cpus', lim, 'cpu', 'limits.cpus');
    legacy('mem_limit', lim, 'memory', 'limits.memory');
    legacy('mem_reservation', res, 'memory', 'reservations.memory');

    const cpu = res.cpu ?? lim.cpu;
    const memory = res.memory ?? lim.memory;
    if (cpu === undefined && memory === undefined && res.gpus === undefined && xs.gpu === undefined)
      this.warn(
        b,
        'no deploy.resources: the service reserves no CPU or memory (placement does not count it)',
      );
    const resources: Obj = { cpu: { milli: cpu ?? 0 }, memoryBytes: memory ?? 0 };
    this.origin(
      'spec.resources.cpu.milli',
      at(rp, res.cpu !== undefined ? 'reservations' : 'limits', 'cpus'),
    );
    this.origin(
      'spec.resources.memoryBytes',
      at(rp, res.memory !== undefined ? 'reservations' : 'limits', 'memory'),
    );
    this.origin('spec.resources', rp);
    if (xs.bindCores !== undefined) {
      if (typeof xs.bindCores !== 'boolean')
        this.err(at(b, 'x-shoal', 'bindCores'), `expected true or false, got ${show(xs.bindCores)}`);
      else if (xs.bindCores) (resources.cpu as Obj).bind = true;
    }
    if (xs.gpu !== undefined) {
      if (res.gpus !== undefined)
        this.err(at(b, 'x-shoal', 'gpu'), 'GPUs given twice (also deploy.resources.reservations.devices)');
      resources.gpu = xs.gpu as Json;
      this.origin('spec.resources.gpu', at(b, 'x-shoal', 'gpu'), true);
    } else if (res.gpus !== undefined && res.gpus > 0) resources.gpu = { milli: res.gpus * 1000 };
    this.spec.resources = resources as Json;
    const limits: Obj = {};
    if (res.cpu !== undefined && lim.cpu !== undefined) {
      limits.cpuMilli = lim.cpu;
      this.origin('spec.limits.cpuMilli', at(rp, 'limits', 'cpus'));
    }
    if (res.memory !== undefined && lim.memory !== undefined) {
      limits.memoryBytes = lim.memory;
      this.origin('spec.limits.memoryBytes', at(rp, 'limits', 'memory'));
    }
    if (Object.keys(limits).length > 0) this.spec.limits = limits as Json;
  }

  /** Compose device requests → whole GPUs (count). */
  private devices(v: unknown, path: string): number | undefined {
    if (!Array.isArray(v)) {
      this.err(path, `expected a list, got ${show(v)}`);
      return undefined;
    }
    let total = 0;
    v.forEach((d, i) => {
      const p = at(path, i);
      const o = this.map(d, p, ['capabilities', 'count', 'device_ids', 'driver', 'options']);
      if (!o) return;
      const caps = o.capabilities;
      if (!Array.isArray(caps) || !caps.includes('gpu')) {
        this.err(at(p, 'capabilities'), 'shoal reserves GPU devices only: expected capabilities: [gpu]');
        return;
      }
      if (o.device_ids !== undefined) {
        this.err(
          at(p, 'device_ids'),
          'not supported: shoal picks the devices; give count (or x-shoal.gpu for a fraction)',
        );
        return;
      }
      if (o.driver !== undefined) this.warn(at(p, 'driver'), 'ignored: the host decides the driver');
      if (o.options !== undefined)
        this.err(at(p, 'options'), 'not supported: driver options are host configuration');
      if (o.count === undefined || o.count === 'all') {
        this.err(at(p, 'count'), 'required: shoal needs a number of GPUs (all is host-dependent)');
        return;
      }
      const n = this.int(o.count, at(p, 'count'), 1, 1024);
      if (n !== undefined) total += n;
    });
    return total;
  }

  private placement(p: unknown, xs: Obj): void {
    const b = this.base;
    const pp = at(b, 'deploy', 'placement');
    const o = p === undefined ? {} : this.map(p, pp, ['constraints', 'preferences', 'max_replicas_per_node']);
    if (!o) return;
    if (o.constraints !== undefined) {
      const cp = at(pp, 'constraints');
      if (!Array.isArray(o.constraints)) this.err(cp, `expected a list, got ${show(o.constraints)}`);
      else {
        const out: string[] = [];
        o.constraints.forEach((c, i) => {
          const k = swarmConstraint(c);
          if (typeof k === 'string') this.err(at(cp, i), k);
          else {
            this.origin(`spec.constraints[${out.length}]`, at(cp, i));
            out.push(formatConstraint(k.constraint));
          }
        });
        this.set('constraints', out, cp);
      }
    }
    let spread: string | undefined;
    let spreadFrom = '';
    if (o.preferences !== undefined) {
      const prp = at(pp, 'preferences');
      const prefs = o.preferences;
      if (!Array.isArray(prefs) || prefs.length !== 1)
        this.err(prp, 'expected one preference [{spread: node.labels.<key>}] (shoal spreads over one label)');
      else {
        const q = this.map(prefs[0], at(prp, 0), ['spread']);
        const m = typeof q?.spread === 'string' ? /^node\.labels\.(.+)$/.exec(q.spread.trim()) : null;
        if (!m) this.err(at(prp, 0, 'spread'), `expected node.labels.<key>, got ${show(q?.spread)}`);
        else {
          spread = m[1];
          spreadFrom = at(prp, 0, 'spread');
        }
      }
    }
    if (xs.spread !== undefined) {
      if (spread !== undefined)
        this.err(at(b, 'x-shoal', 'spread'), 'given twice (also deploy.placement.preferences)');
      const v = xs.spread;
      if (typeof v === 'string') spread = v;
      else if (isObj(v)) {
        this.set('spread', v as Json, at(b, 'x-shoal', 'spread'), true);
      } else this.err(at(b, 'x-shoal', 'spread'), `expected a label key or {label}, got ${show(v)}`);
      spreadFrom = at(b, 'x-shoal', 'spread');
    }
    if (spread !== undefined) {
      this.spec.spread = { label: spread };
      this.origin('spec.spread', spreadFrom);
      this.origin('spec.spread.label', spreadFrom);
    }
    if (o.max_replicas_per_node !== undefined) {
      if (xs.maxPerHost !== undefined)
        this.err(at(b, 'x-shoal', 'maxPerHost'), 'given twice (also deploy.placement.max_replicas_per_node)');
      this.set('maxPerHost', o.max_replicas_per_node as Json, at(pp, 'max_replicas_per_node'));
    } else if (xs.maxPerHost !== undefined)
      this.set('maxPerHost', xs.maxPerHost as Json, at(b, 'x-shoal', 'maxPerHost'));
    if (xs.antiAffinity !== undefined)
      this.set('antiAffinity', xs.antiAffinity as Json, at(b, 'x-shoal', 'antiAffinity'));
    if (xs.hostLimit !== undefined) {
      this.set('hostLimit', xs.hostLimit as Json, at(b, 'x-shoal', 'hostLimit'));
      if (this.strategy !== 'fill' && this.strategy !== 'each')
        this.err(
          at(b, 'x-shoal', 'hostLimit'),
          'only applies to the per-host strategies fill and each (x-shoal.strategy)',
        );
    }
  }

  /** Canonical-spec path → file path, through the recorded origins. */
  fileOf(specPath: string): { path: string; exact: boolean } {
    let best: Origin | undefined;
    for (const o of this.origins) {
      const hit =
        specPath === o.spec || specPath.startsWith(`${o.spec}.`) || specPath.startsWith(`${o.spec}[`);
      if (hit && (!best || o.spec.length >= best.spec.length)) best = o;
    }
    if (!best) return { path: this.base, exact: false };
    if (best.spec === specPath) return { path: best.file, exact: true };
    if (best.pass) return { path: best.file + specPath.slice(best.spec.length), exact: true };
    return { path: best.file, exact: false };
  }
}

/** Swarm constraint (`node.labels.zone == a`, `node.hostname != h1`, `node.id == x`) → shoal. */
export function swarmConstraint(c: unknown): { constraint: Constraint } | string {
  if (typeof c !== 'string') return `expected a string like "node.labels.zone == a", got ${show(c)}`;
  const m = /^\s*([A-Za-z0-9_.\-/:@+]+)\s*(==|!=)\s*(.*?)\s*$/.exec(c);
  if (!m) return `expected "<attribute> == <value>" or "<attribute> != <value>", got ${JSON.stringify(c)}`;
  const [, attr, op, value] = m as unknown as [string, string, '==' | '!=', string];
  let key: string;
  if (attr.startsWith('node.labels.') && attr.length > 'node.labels.'.length)
    key = attr.slice('node.labels.'.length);
  else if (attr === 'node.hostname') key = 'shoal.hostname';
  else if (attr === 'node.id') key = 'shoal.id';
  else if (attr === 'node.role')
    return 'node.role: shoal has no manager or worker nodes (every agent is equal); constrain on node.labels.<key>';
  else return `${attr}: not supported (supported: node.labels.<key>, node.hostname, node.id)`;
  if (value === '') return `expected a value after ${op} in ${JSON.stringify(c)}`;
  return { constraint: { op: op === '==' ? 'eq' : 'ne', key, value } };
}

// --- the file ---------------------------------------------------------------------------------------

/**
 * Parse a Compose file into deploys. Throws SpecError listing every problem (one per line,
 * `file: path: message`); YAML syntax errors keep their line and column.
 */
export function parseCompose(text: string, opts: ComposeOptions): ComposeResult {
  const c = new Collector(opts.file);
  const env = opts.env ?? {};
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { merge: true, prettyErrors: false, lineCounter, uniqueKeys: true });
  if (doc.errors.length > 0) {
    for (const e of doc.errors) {
      const pos = e.linePos?.[0] ?? lineCounter.linePos(e.pos[0]);
      c.error(
        `line ${pos.line}, column ${pos.col}`,
        e.message.replace(/ at line \d+, column \d+:[\s\S]*$/, ''),
      );
    }
    throw new SpecError(c.issues);
  }
  for (const w of doc.warnings) {
    const pos = w.linePos?.[0] ?? lineCounter.linePos(w.pos[0]);
    c.warn(`line ${pos.line}, column ${pos.col}`, w.message);
  }
  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: 1000 });
  } catch (e) {
    c.error('(file)', (e as Error).message);
    throw new SpecError(c.issues);
  }
  if (!isObj(raw)) {
    c.error('(file)', `expected a map with services:, got ${show(raw)}`);
    throw new SpecError(c.issues);
  }
  for (const k of Object.keys(raw)) {
    if (TOP_LEVEL_KEYS.includes(k) || k.startsWith('x-')) continue;
    c.error(k, `unknown top-level key (supported: services, name, volumes; ignored: version, networks)`);
  }
  const top = interpolateTree(
    Object.fromEntries(Object.entries(raw).filter(([k]) => !k.startsWith('x-'))),
    '',
    env,
    c,
  ) as Obj;
  if (top.version !== undefined) c.warn('version', 'ignored: obsolete in the Compose specification');
  if (top.networks !== undefined)
    c.warn('networks', 'ignored: shoal runs workloads without Compose networks');
  if (top.include !== undefined) c.error('include', 'not supported: shoal reads one Compose file');
  if (top.secrets !== undefined) c.error('secrets', 'not supported: shoal has no secret store yet');
  if (top.configs !== undefined) c.error('configs', 'not supported: shoal has no config store yet');

  let project: string | undefined = opts.project;
  if (project === undefined && top.name !== undefined) {
    if (typeof top.name !== 'string') c.error('name', `expected a project name, got ${show(top.name)}`);
    else project = top.name;
  }
  if (project !== undefined && !/^[a-z0-9][a-z0-9-]*$/.test(project))
    c.error(
      opts.project !== undefined ? '(project)' : 'name',
      `project name ${JSON.stringify(project)}: expected a-z, 0-9 and -, starting with a letter or digit`,
    );

  const volumes = new Map<string, TopVolume>();
  if (top.volumes !== undefined) {
    if (!isObj(top.volumes)) c.error('volumes', `expected a map of named volumes, got ${show(top.volumes)}`);
    else
      for (const [name, def] of Object.entries(top.volumes)) {
        const p = at('volumes', name);
        const vol: TopVolume = { name: project ? `${project}_${name}` : name };
        if (def !== null && def !== undefined) {
          if (!isObj(def)) {
            c.error(p, `expected a map or nothing, got ${show(def)}`);
            continue;
          }
          for (const [k, v] of Object.entries(def)) {
            const kp = at(p, k);
            if (k === 'name') {
              if (typeof v === 'string') vol.name = v;
              else c.error(kp, `expected a string, got ${show(v)}`);
            } else if (k === 'external') {
              if (v === true && def.name === undefined) vol.name = name;
              else if (typeof v !== 'boolean') c.error(kp, `expected true or false, got ${show(v)}`);
            } else if (k === 'driver') {
              if (v !== 'local') c.error(kp, `only the local driver is supported, got ${show(v)}`);
            } else if (k === 'labels') c.warn(kp, 'ignored: volume labels are not set');
            else if (k === 'driver_opts') c.error(kp, 'not supported: driver options are host configuration');
            else if (k === 'x-shoal') {
              if (!isObj(v) || Object.keys(v).some((x) => x !== 'size')) c.error(kp, 'expected {size: 10G}');
              else if (v.size !== undefined) {
                const n = parseSize(v.size);
                if (n === null || n === 0)
                  c.error(at(kp, 'size'), `expected a size like 10G, got ${show(v.size)}`);
                else vol.sizeBytes = n;
              }
            } else if (!k.startsWith('x-'))
              c.error(kp, 'unknown key (supported: name, external, driver, labels, x-shoal)');
          }
        }
        volumes.set(name, vol);
      }
  }

  const deploys: ComposeDeploy[] = [];
  const services = top.services;
  if (!isObj(services) || Object.keys(services).length === 0) {
    c.error('services', `expected a map of services, got ${show(services)}`);
    throw new SpecError(c.issues);
  }
  const active = new Set(opts.profiles ?? []);
  const ctx: Ctx = { c, env, project, volumes };
  for (const [name, def] of Object.entries(services)) {
    const sp = at('services', name);
    if (!isObj(def)) {
      c.error(sp, `expected a map, got ${show(def)}`, name);
      continue;
    }
    if (def.profiles !== undefined) {
      const profiles = def.profiles;
      if (!Array.isArray(profiles) || !profiles.every((p) => typeof p === 'string')) {
        c.error(at(sp, 'profiles'), `expected a list of names, got ${show(profiles)}`, name);
        continue;
      }
      if (!profiles.some((p) => active.has(p))) {
        c.warn(sp, `skipped: none of its profiles (${profiles.join(', ')}) is active`);
        continue;
      }
    }
    const id = project !== undefined ? `${project}-${name}` : name;
    if (!ID_RE.test(name) || !ID_RE.test(id)) {
      c.error(
        sp,
        `deploy id ${JSON.stringify(id)} is not valid: ids are 1-63 characters of a-z, 0-9 and -, starting with a letter or digit (rename the service${project !== undefined ? ' or the project' : ''})`,
        name,
      );
      continue;
    }
    const m = new ServiceMapper(ctx, name, def);
    const before = c.issues.length;
    m.run();
    if (c.issues.length > before) continue; // the spec is incomplete: report the file's own errors only
    const v = validateIntentSpec(m.spec);
    if (!v.ok) {
      for (const iss of v.issues) {
        const where = m.fileOf(iss.path);
        c.error(where.path, where.exact ? iss.message : `${iss.path}: ${iss.message}`, name);
      }
      continue;
    }
    deploys.push({ id, name, replicas: m.replicas, strategy: m.strategy, spec: v.spec });
  }
  if (c.issues.length > 0) throw new SpecError(c.issues);
  return { deploys, warnings: c.warnings };
}
