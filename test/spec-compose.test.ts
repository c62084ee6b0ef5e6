// biome-ignore-all lint/suspicious/noTemplateCurlyInString: Compose interpolation test data (${VAR} is literal text here)
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import type { JsonObject } from '../crdt/types.ts';
import {
  type ComposeResult,
  interpolate,
  parseCompose,
  parseDuration,
  parseSize,
  SpecError,
  shellSplit,
} from '../node/spec/compose.ts';
import { validateIntent, validateIntentSpec } from '../node/spec/intent.ts';

const FIXTURES = new URL('./fixtures/compose/', import.meta.url);
const IMG = 'shoal/busybox:latest';
const RES = { cpu: { milli: 0 }, memoryBytes: 0, diskBytes: 0 };

function parse(
  doc: unknown,
  opts: { env?: Record<string, string>; project?: string; profiles?: string[] } = {},
) {
  return parseCompose(typeof doc === 'string' ? doc : stringify(doc), { file: 'c.yaml', ...opts });
}

function errorsOf(doc: unknown, opts: { env?: Record<string, string>; project?: string } = {}): string[] {
  try {
    parse(doc, opts);
  } catch (e) {
    if (e instanceof SpecError) {
      expect(e.message).toBe(e.issues.map((i) => `${i.file}: ${i.path}: ${i.message}`).join('\n'));
      return e.message.split('\n');
    }
    throw e;
  }
  throw new Error('expected a SpecError');
}

describe('realistic multi-service file', () => {
  const text = readFileSync(new URL('shop.yaml', FIXTURES), 'utf8');
  const r: ComposeResult = parseCompose(text, {
    file: 'shop.yaml',
    env: { REGION: 'eu-west', API_TOKEN: 't0k' },
  });
  const byId = Object.fromEntries(r.deploys.map((d) => [d.id, d]));

  it('maps every service to a deploy with a deterministic id', () => {
    expect(r.deploys.map((d) => [d.id, d.name, d.replicas, d.strategy])).toEqual([
      ['shop-web', 'web', 3, 'binpack'],
      ['shop-api', 'api', 2, 'spread'],
      ['shop-db', 'db', 1, 'binpack'],
      ['shop-agent', 'agent', 1, 'each'],
      ['shop-report', 'report', 1, 'binpack'],
    ]);
    for (const d of r.deploys) expect(validateIntentSpec(d.spec)).toEqual({ ok: true, spec: d.spec });
    // the same file parsed again (another agent) gives byte-identical deploys
    const again = parseCompose(text, { file: 'shop.yaml', env: { REGION: 'eu-west', API_TOKEN: 't0k' } });
    expect(JSON.stringify(again)).toBe(JSON.stringify(r));
  });

  it('web: ports, env from anchors and interpolation, check, resources, placement, update', () => {
    const s = byId['shop-web']!.spec;
    expect(s.args).toEqual(['httpd', '-f', '-p', '8080', '-h', '/www']);
    expect(s.env).toEqual({ LOG_LEVEL: 'info', REGION: 'eu-west', BACKEND: 'http://api:9000' });
    expect(s.ports).toEqual([
      { target: 8080, published: 8080, protocol: 'tcp' },
      { target: 8443, published: 8443, protocol: 'tcp' },
    ]);
    expect(s.healthcheck).toEqual({
      type: 'exec',
      command: ['wget', '-q', '-O', '-', 'http://127.0.0.1:8080/'],
      interval: 15_000,
      timeout: 3_000,
      retries: 5,
      startPeriod: 60_000,
    });
    expect(s.resources).toEqual({ cpu: { milli: 250 }, memoryBytes: 128 * 2 ** 20, diskBytes: 0 });
    expect(s.limits).toEqual({ cpuMilli: 1000, memoryBytes: 256 * 2 ** 20 });
    expect(s.constraints).toEqual(['tier = edge']);
    expect(s.spread).toEqual({ label: 'zone' });
    expect(s.maxPerHost).toBe(1);
    expect(s.update).toEqual({
      parallelism: 1,
      delayMs: 10_000,
      monitorMs: 30_000,
      maxFailureRatio: 0,
      order: 'start-first',
      failureAction: 'rollback',
    });
    expect(s.rollbackConfig).toMatchObject({ parallelism: 0, failureAction: 'pause' });
  });

  it('api, db, agent, report', () => {
    const api = byId['shop-api']!.spec;
    expect(api.command).toEqual(['/bin/sh', '-c']);
    expect(api.args).toEqual(['exec api-server --port 9000']);
    expect(api.env).toEqual({
      LOG_LEVEL: 'info',
      DATABASE_URL: 'postgres://db:5432/shop',
      API_TOKEN: 't0k',
    });
    // 0.0.0.0 (every address) is what host networking gives: dropped, not an error.
    expect(api.ports).toEqual([{ target: 9000, published: 9000, protocol: 'tcp' }]);
    expect(api.restart).toBe('on-failure');
    expect(api.restartPolicy).toEqual({ delayMs: 1000, maxAttempts: 5 });
    expect(api.stopTimeoutMs).toBe(30_000);
    expect(api.healthcheck).toMatchObject({
      type: 'http',
      port: 9000,
      path: '/healthz',
      expectStatus: [200, 200],
    });
    expect(api.hooks).toEqual({
      beforeStop: { command: ['/bin/sh', '-c', 'api-server drain'], force: false, timeoutMs: 20_000 },
    });
    expect(api.antiAffinity).toBe(true);
    const db = byId['shop-db']!.spec;
    expect(db.volumes).toEqual([
      {
        type: 'volume',
        source: 'shop_dbdata',
        target: '/var/lib/db',
        readOnly: false,
        sizeBytes: 10 * 2 ** 30,
      },
      { type: 'bind', source: '/etc/localtime', target: '/etc/localtime', readOnly: true },
      { type: 'tmpfs', target: '/run', readOnly: false, sizeBytes: 64 * 2 ** 20 },
    ]);
    expect(db.user).toBe('999:999');
    expect(db.workdir).toBe('/var/lib/db');
    expect(db.resources).toEqual({ cpu: { milli: 2000, bind: true }, memoryBytes: 2 ** 30, diskBytes: 0 });
    expect(db.limits).toEqual({ memoryBytes: 2 * 2 ** 30 });
    expect(db.constraints).toEqual(['shoal.hostname = db-1']);
    expect(byId['shop-agent']!.spec.resources).toEqual({
      cpu: { milli: 100 },
      memoryBytes: 32 * 2 ** 20,
      diskBytes: 0,
    });
    const report = byId['shop-report']!.spec;
    expect(report.args).toEqual(['sh', '-c', 'echo report $(date)']);
    expect(report.job).toEqual({ retries: 3, backoffMs: 30_000 });
    expect(report.restart).toBe('no');
  });

  it('warns about what it ignores', () => {
    expect(r.warnings).toEqual([
      'shop.yaml: networks: ignored: shoal runs workloads without Compose networks',
      'shop.yaml: services.web.networks: ignored: shoal runs workloads without Compose networks',
      'shop.yaml: services.web.depends_on: ignored: deploys start independently; a service must retry until its dependencies answer',
    ]);
    // Published ports are applied (host networking): no "not applied" warning any more.
    expect(r.warnings.some((w) => /not applied/.test(w))).toBe(false);
  });

  it('a missing required variable is an error naming where it is used', () => {
    const lines = errorsOf(text, { env: {} });
    expect(lines).toEqual([
      'c.yaml: services.web.environment.REGION: required variable REGION is missing: set REGION to the deployment region',
    ]);
  });
});

describe('mapping table', () => {
  const rows: [
    string,
    Record<string, unknown>,
    Partial<{ spec: JsonObject; replicas: number; strategy: string }>,
  ][] = [
    [
      'image only: zero resources',
      {},
      { spec: { image: IMG, resources: RES }, replicas: 1, strategy: 'binpack' },
    ],
    [
      'entrypoint string → command',
      { entrypoint: '/bin/sh -c' },
      { spec: { image: IMG, command: ['/bin/sh', '-c'], resources: RES } },
    ],
    [
      'command with quotes → args',
      { command: `sh -c 'echo "a b"' "x\\"y" z\\ w` },
      { spec: { image: IMG, args: ['sh', '-c', 'echo "a b"', 'x"y', 'z w'], resources: RES } },
    ],
    [
      'command list, numbers → strings',
      { command: ['sleep', 10] },
      { spec: { image: IMG, args: ['sleep', '10'], resources: RES } },
    ],
    ['empty command list clears CMD', { command: [] }, { spec: { image: IMG, args: [], resources: RES } }],
    [
      'environment map with numbers and booleans',
      { environment: { A: 1, B: true, C: 'x=y', D: '' } },
      { spec: { image: IMG, env: { A: '1', B: 'true', C: 'x=y', D: '' }, resources: RES } },
    ],
    [
      'environment list, bare key from env',
      { environment: ['A=1', 'HOME_DIR', 'E='] },
      { spec: { image: IMG, env: { A: '1', HOME_DIR: '/home/x', E: '' }, resources: RES } },
    ],
    [
      'short ports: every address, udp, range, container only, ipv6 any',
      {
        ports: ['0.0.0.0:8080:8080', '53:53/udp', '9000-9001:9000-9001', 3000, '[::]:81:81', '0.0.0.0::82'],
      },
      {
        spec: {
          image: IMG,
          ports: [
            { target: 8080, published: 8080, protocol: 'tcp' },
            { target: 53, published: 53, protocol: 'udp' },
            { target: 9000, published: 9000, protocol: 'tcp' },
            { target: 9001, published: 9001, protocol: 'tcp' },
            { target: 3000, protocol: 'tcp' },
            { target: 81, published: 81, protocol: 'tcp' },
            { target: 82, protocol: 'tcp' },
          ],
          resources: RES,
        },
      },
    ],
    [
      'long ports',
      { ports: [{ target: 80, published: '80', host_ip: '0.0.0.0', protocol: 'udp' }] },
      {
        spec: {
          image: IMG,
          ports: [{ target: 80, published: 80, protocol: 'udp' }],
          resources: RES,
        },
      },
    ],
    [
      'volumes: anonymous, bind ro, long bind, long tmpfs, tmpfs key',
      {
        volumes: [
          '/data',
          '/srv/www:/www:ro',
          { type: 'bind', source: '/a', target: '/b', read_only: true },
          { type: 'tmpfs', target: '/t', tmpfs: { size: '1m' } },
        ],
        tmpfs: ['/run:size=64k', '/tmp'],
      },
      {
        spec: {
          image: IMG,
          volumes: [
            { type: 'volume', target: '/data', readOnly: false },
            { type: 'bind', source: '/srv/www', target: '/www', readOnly: true },
            { type: 'bind', source: '/a', target: '/b', readOnly: true },
            { type: 'tmpfs', target: '/t', readOnly: false, sizeBytes: 2 ** 20 },
            { type: 'tmpfs', target: '/run', readOnly: false, sizeBytes: 64 * 1024 },
            { type: 'tmpfs', target: '/tmp', readOnly: false },
          ],
          resources: RES,
        },
      },
    ],
    [
      'working_dir, numeric user',
      { working_dir: '/w', user: 1000 },
      { spec: { image: IMG, workdir: '/w', user: '1000', resources: RES } },
    ],
    [
      'labels list and map',
      { labels: ['a=1', 'b'] },
      { spec: { image: IMG, labels: { a: '1', b: '' }, resources: RES } },
    ],
    [
      'healthcheck CMD-SHELL and string',
      {
        healthcheck: {
          test: ['CMD-SHELL', 'curl -f localhost || exit 1'],
          interval: '1m30s',
          start_period: '500ms',
        },
      },
      {
        spec: {
          image: IMG,
          healthcheck: {
            type: 'exec',
            command: ['/bin/sh', '-c', 'curl -f localhost || exit 1'],
            interval: 90_000,
            timeout: 2_000,
            retries: 3,
            startPeriod: 500,
          },
          resources: RES,
        },
      },
    ],
    [
      'healthcheck disable / NONE → no check',
      { healthcheck: { test: ['NONE'] } },
      { spec: { image: IMG, resources: RES } },
    ],
    [
      'restart unless-stopped → always',
      { restart: 'unless-stopped' },
      { spec: { image: IMG, restart: 'always', resources: RES } },
    ],
    [
      'deploy.restart_policy',
      { deploy: { restart_policy: { condition: 'on-failure', delay: '5s', max_attempts: 3, window: '2m' } } },
      {
        spec: {
          image: IMG,
          restart: 'on-failure',
          restartPolicy: { delayMs: 5000, maxAttempts: 3, windowMs: 120_000 },
          resources: RES,
        },
      },
    ],
    [
      'stop_grace_period',
      { stop_grace_period: '1m' },
      { spec: { image: IMG, stopTimeoutMs: 60_000, resources: RES } },
    ],
    ['deploy.replicas', { deploy: { replicas: 4 } }, { replicas: 4 }],
    ['scale', { scale: 2 }, { replicas: 2 }],
    ['global → each, 1 per host', { deploy: { mode: 'global' } }, { replicas: 1, strategy: 'each' }],
    [
      'global-job → each + job',
      { deploy: { mode: 'global-job' } },
      {
        replicas: 1,
        strategy: 'each',
        spec: { image: IMG, job: { retries: 0, backoffMs: 1000 }, resources: RES },
      },
    ],
    [
      'limits alone serve as request',
      { deploy: { resources: { limits: { cpus: 0.5, memory: '1.5g' } } } },
      { spec: { image: IMG, resources: { cpu: { milli: 500 }, memoryBytes: 1.5 * 2 ** 30, diskBytes: 0 } } },
    ],
    [
      'reservations alone; GPUs by count',
      {
        deploy: {
          resources: {
            reservations: {
              cpus: '2',
              memory: 1024,
              devices: [{ capabilities: ['gpu'], count: 2, driver: 'nvidia' }],
            },
          },
        },
      },
      {
        spec: {
          image: IMG,
          resources: { cpu: { milli: 2000 }, memoryBytes: 1024, diskBytes: 0, gpu: { milli: 2000 } },
        },
      },
    ],
    [
      'legacy cpus / mem_limit / mem_reservation',
      { cpus: 1.5, mem_limit: '1g', mem_reservation: '512m' },
      {
        spec: {
          image: IMG,
          resources: { cpu: { milli: 1500 }, memoryBytes: 512 * 2 ** 20, diskBytes: 0 },
          limits: { memoryBytes: 2 ** 30 },
        },
      },
    ],
    [
      'swarm constraints',
      {
        deploy: {
          placement: {
            constraints: [
              'node.labels.zone==a',
              'node.hostname != h1',
              'node.id == abc',
              'node.labels.os == "my os"',
            ],
          },
        },
      },
      {
        spec: {
          image: IMG,
          constraints: ['zone = a', 'shoal.hostname != h1', 'shoal.id = abc', 'os = "\\"my os\\""'],
          resources: RES,
        },
      },
    ],
    [
      'x-shoal keys',
      {
        'x-shoal': {
          strategy: 'fill',
          engine: 'docker',
          gpu: { milli: 250, model: 'T4' },
          bindCores: true,
          spread: 'rack',
          maxPerHost: 2,
          antiAffinity: true,
          hostLimit: 3,
          hooks: { afterStart: { command: ['init'], force: true } },
          healthcheck: { type: 'tcp', port: 5432 },
        },
        'x-other': { ignored: true },
      },
      {
        strategy: 'fill',
        spec: {
          image: IMG,
          engine: 'docker',
          healthcheck: {
            type: 'tcp',
            port: 5432,
            interval: 10_000,
            timeout: 2_000,
            retries: 3,
            startPeriod: 0,
          },
          hooks: { afterStart: { command: ['init'], force: true, timeoutMs: 10_000 } },
          resources: {
            cpu: { milli: 0, bind: true },
            memoryBytes: 0,
            diskBytes: 0,
            gpu: { milli: 250, model: 'T4' },
          },
          spread: { label: 'rack' },
          maxPerHost: 2,
          antiAffinity: true,
          hostLimit: 3,
        },
      },
    ],
    [
      'x-shoal.engine process without image',
      { image: undefined, entrypoint: ['/usr/bin/worker'], 'x-shoal': { engine: 'process' } },
      { spec: { engine: 'process', command: ['/usr/bin/worker'], resources: RES } },
    ],
  ];
  it.each(rows)('%s', (_name, body, want) => {
    const clean = Object.fromEntries(
      Object.entries({ image: IMG, ...body }).filter(([, v]) => v !== undefined),
    );
    const r = parse({ services: { s: clean } }, { env: { HOME_DIR: '/home/x' } });
    const d = r.deploys[0]!;
    if (want.spec) expect(d.spec).toEqual(want.spec);
    if (want.replicas !== undefined) expect(d.replicas).toBe(want.replicas);
    if (want.strategy !== undefined) expect(d.strategy).toBe(want.strategy);
    expect(validateIntentSpec(d.spec)).toEqual({ ok: true, spec: d.spec });
  });

  it('named volumes: project prefix, name override, external, size', () => {
    const r = parse(
      {
        name: 'p',
        services: {
          s: { image: IMG, volumes: ['a:/a', 'b:/b:ro', { type: 'volume', source: 'c', target: '/c' }] },
        },
        volumes: { a: { 'x-shoal': { size: '10G' } }, b: { name: 'shared' }, c: { external: true } },
      },
      {},
    );
    expect(r.deploys[0]!.spec.volumes).toEqual([
      { type: 'volume', source: 'p_a', target: '/a', readOnly: false, sizeBytes: 10 * 2 ** 30 },
      { type: 'volume', source: 'shared', target: '/b', readOnly: true },
      { type: 'volume', source: 'c', target: '/c', readOnly: false },
    ]);
  });

  it('ids: service name, top-level name, project option overrides it', () => {
    expect(parse({ services: { web: { image: IMG } } }).deploys[0]!.id).toBe('web');
    expect(parse({ name: 'shop', services: { web: { image: IMG } } }).deploys[0]!.id).toBe('shop-web');
    expect(parse({ name: 'shop', services: { web: { image: IMG } } }, { project: 'x' }).deploys[0]!.id).toBe(
      'x-web',
    );
  });

  it('profiles: skipped with a warning unless active', () => {
    const doc = { services: { web: { image: IMG }, debug: { image: IMG, profiles: ['debug'] } } };
    const r = parse(doc);
    expect(r.deploys.map((d) => d.id)).toEqual(['web']);
    expect(r.warnings).toContain('c.yaml: services.debug: skipped: none of its profiles (debug) is active');
    expect(parse(doc, { profiles: ['debug'] }).deploys.map((d) => d.id)).toEqual(['web', 'debug']);
  });

  it('warnings: ignored keys, unset variables, bare keys not in the environment, no resources', () => {
    const r = parse({
      version: '3.9',
      services: {
        s: { image: 'img${TAG}', container_name: 'x', environment: ['MISSING'], deploy: { resources: {} } },
      },
    });
    expect(r.warnings).toEqual([
      'c.yaml: services.s.image: variable TAG is not set: substituting an empty string',
      'c.yaml: version: ignored: obsolete in the Compose specification',
      'c.yaml: services.s.container_name: ignored: shoal names each replica itself',
      'c.yaml: services.s.environment[0]: MISSING is not set in the environment: left out',
      'c.yaml: services.s: no deploy.resources: the service reserves no CPU or memory (placement does not count it)',
    ]);
  });
});

describe('errors', () => {
  const rows: [string, unknown, string[], Record<string, string>?][] = [
    [
      'memory size',
      { services: { api: { image: IMG, deploy: { resources: { limits: { memory: 'lots' } } } } } },
      ['c.yaml: services.api.deploy.resources.limits.memory: expected a size like 512M, got "lots"'],
    ],
    [
      'build, unknown key, security options',
      { services: { api: { build: '.', imag: 'x', privileged: true } } },
      [
        'c.yaml: services.api.build: not supported: shoal never builds images: build the image, load it on the hosts and give image:',
        'c.yaml: services.api.imag: unknown Compose service key',
        "c.yaml: services.api.privileged: not supported: not supported by shoal's engines: the workload would silently run without it",
        'c.yaml: services.api.image: required: shoal never builds images (or set x-shoal.engine: process with an entrypoint)',
      ],
    ],
    [
      'bad service name',
      { services: { My_Api: { image: IMG } } },
      [
        'c.yaml: services.My_Api: deploy id "My_Api" is not valid: ids are 1-63 characters of a-z, 0-9 and -, starting with a letter or digit (rename the service)',
      ],
    ],
    [
      'unknown top-level key, secrets',
      { services: { a: { image: IMG } }, servics: {}, secrets: {} },
      [
        'c.yaml: servics: unknown top-level key (supported: services, name, volumes; ignored: version, networks)',
        'c.yaml: secrets: not supported: shoal has no secret store yet',
      ],
    ],
    ['no services', { volumes: {} }, ['c.yaml: services: expected a map of services, got nothing']],
    [
      'durations, restart, healthcheck test',
      {
        services: {
          a: {
            image: IMG,
            stop_grace_period: '10 s',
            restart: 'sometimes',
            healthcheck: { test: ['RUN', 'x'], interval: '2d' },
          },
        },
      },
      [
        'c.yaml: services.a.healthcheck.test: expected ["CMD", "prog", "arg", ...], ["CMD-SHELL", "command line"], ["NONE"] or a command line',
        'c.yaml: services.a.restart: expected no, always, on-failure[:N] or unless-stopped, got "sometimes"',
        'c.yaml: services.a.stop_grace_period: expected a duration like 1m30s, got "10 s"',
      ],
    ],
    [
      'ports',
      { services: { a: { image: IMG, ports: ['80:80/sctp', '8000-8001:80', 'x:80', { target: 0 }] } } },
      [
        'c.yaml: services.a.ports[0]: protocol: expected tcp or udp, got "sctp"',
        'c.yaml: services.a.ports[1]: a published range needs a container range of the same length (shoal does not pick a port from a range): "8000-8001:80"',
        'c.yaml: services.a.ports[2]: expected a published port (1..65535) or range like 8000-8010, got "x"',
        'c.yaml: services.a.ports[3].target: expected an integer in 1..65535, got 0',
      ],
    ],
    [
      'ports: a mapping or a host IP cannot be honoured with host networking',
      {
        services: {
          web: {
            image: IMG,
            ports: [
              '8080:80',
              '9000-9001:7000-7001',
              '127.0.0.1:81:81',
              { target: 80, published: 8081 },
              { target: 82, host_ip: '::1' },
              '83:83',
            ],
          },
        },
      },
      [
        'c.yaml: services.web.ports[0]: "8080:80" maps host port 8080 to container port 80: shoal publishes ports with host networking (no port mapping), so the container listens on the host port itself — use "80:80", or make the service listen on 8080 and use "8080:8080"',
        'c.yaml: services.web.ports[1]: "9000-9001:7000-7001" maps host port 9000 to container port 7000: shoal publishes ports with host networking (no port mapping), so the container listens on the host port itself — use "7000:7000", or make the service listen on 9000 and use "9000:9000"',
        'c.yaml: services.web.ports[2]: host IP 127.0.0.1: not supported: shoal publishes ports with host networking, so the service itself chooses the address it listens on (configure it to listen on 127.0.0.1)',
        'c.yaml: services.web.ports[3].published: maps host port 8081 to container port 80: shoal publishes ports with host networking (no port mapping), so the container listens on the host port itself — use "80:80", or make the service listen on 8081 and use "8081:8081"',
        'c.yaml: services.web.ports[4].host_ip: host IP ::1: not supported: shoal publishes ports with host networking, so the service itself chooses the address it listens on (configure it to listen on ::1)',
      ],
    ],
    [
      'volumes',
      {
        services: {
          a: {
            image: IMG,
            volumes: ['./data:/data', 'undeclared:/x', '/a:/b:shared', { type: 'npipe', target: '/p' }],
          },
        },
      },
      [
        'c.yaml: services.a.volumes[0]: bind source "./data" must be an absolute host path: a relative path would be resolved on whichever host runs the replica',
        'c.yaml: services.a.volumes[1]: named volume "undeclared" is not declared under the top-level volumes: key',
        'c.yaml: services.a.volumes[2]: unsupported mode "shared" (supported: ro, rw)',
        'c.yaml: services.a.volumes[3].type: expected bind, volume or tmpfs, got "npipe" (not supported by shoal)',
      ],
    ],
    [
      'placement',
      {
        services: {
          a: {
            image: IMG,
            deploy: {
              placement: {
                constraints: ['node.role == manager', 'engine.labels.x == y', 'zone'],
                preferences: [{ spread: 'node.id' }],
              },
            },
          },
        },
      },
      [
        'c.yaml: services.a.deploy.placement.constraints[0]: node.role: shoal has no manager or worker nodes (every agent is equal); constrain on node.labels.<key>',
        'c.yaml: services.a.deploy.placement.constraints[1]: engine.labels.x: not supported (supported: node.labels.<key>, node.hostname, node.id)',
        'c.yaml: services.a.deploy.placement.constraints[2]: expected "<attribute> == <value>" or "<attribute> != <value>", got "zone"',
        'c.yaml: services.a.deploy.placement.preferences[0].spread: expected node.labels.<key>, got "node.id"',
      ],
    ],
    [
      'resources: reservation above limit, cpus, gpu device ids',
      {
        services: {
          a: {
            image: IMG,
            deploy: {
              resources: {
                limits: { cpus: 'two', memory: '1M' },
                reservations: { memory: '2M', devices: [{ capabilities: ['gpu'], device_ids: ['0'] }] },
              },
            },
          },
          b: {
            image: IMG,
            deploy: { resources: { limits: { memory: '1M' }, reservations: { memory: '2M' } } },
          },
        },
      },
      [
        'c.yaml: services.a.deploy.resources.limits.cpus: expected a number of CPUs like 0.5, got "two"',
        'c.yaml: services.a.deploy.resources.reservations.devices[0].device_ids: not supported: shoal picks the devices; give count (or x-shoal.gpu for a fraction)',
        'c.yaml: services.b.deploy.resources.limits.memory: 1048576 is below the request of 2097152 (resources.memoryBytes)',
      ],
    ],
    [
      'modes and strategies',
      {
        services: {
          a: { image: IMG, deploy: { mode: 'global', replicas: 2 }, 'x-shoal': { strategy: 'spread' } },
          b: { image: IMG, 'x-shoal': { strategy: 'best', hostLimit: 2, color: 'red' } },
          c: { image: IMG, restart: 'always', deploy: { mode: 'replicated-job' } },
        },
      },
      [
        'c.yaml: services.a.x-shoal.strategy: contradicts deploy.mode: global (which is strategy each, one replica per host)',
        'c.yaml: services.a.deploy.replicas: not allowed with mode global (one replica per host)',
        'c.yaml: services.b.x-shoal.color: unknown key (supported: strategy, engine, gpu, bindCores, spread, maxPerHost, antiAffinity, hostLimit, hooks, healthcheck, job)',
        'c.yaml: services.b.x-shoal.strategy: expected one of binpack, spread, auto, global, fill, each, got "best"',
        'c.yaml: services.b.x-shoal.hostLimit: only applies to the per-host strategies fill and each (x-shoal.strategy)',
        'c.yaml: services.c.restart: a job runs to completion: restart must be no or on-failure (job.retries bounds the retries)',
      ],
    ],
    [
      'x-shoal pass-through paths',
      {
        services: {
          a: {
            image: IMG,
            labels: { 'shoal.deploy': 'x' },
            'x-shoal': {
              hooks: { afterStart: { command: [], timeoutMs: 0 } },
              healthcheck: { type: 'http', port: 80, intervall: 5 },
              gpu: { milli: 0 },
            },
          },
        },
      },
      [
        'c.yaml: services.a.labels["shoal.deploy"]: label keys starting with "shoal." are reserved',
        'c.yaml: services.a.x-shoal.healthcheck.intervall: unknown field (allowed: type, port, path, expectStatus, interval, timeout, retries, startPeriod)',
        'c.yaml: services.a.x-shoal.hooks.afterStart.command: expected a non-empty list of strings (argv, no shell)',
        'c.yaml: services.a.x-shoal.hooks.afterStart.timeoutMs: expected an integer in 1..600000, got 0',
        'c.yaml: services.a.x-shoal.gpu.milli: expected a positive integer, got 0',
      ],
    ],
    [
      'interpolation syntax',
      { services: { a: { image: 'img:${TAG', command: 'echo $1', environment: { A: '${B:x}' } } } },
      [
        'c.yaml: services.a.image: unterminated "${" in "img:${TAG"',
        'c.yaml: services.a.command: invalid interpolation in "echo $1": "$" must be followed by a variable name, "{" or another "$" (write $$ for a literal $)',
        'c.yaml: services.a.environment.A: invalid interpolation "${B:x}": expected ${B}, ${B:-default}, ${B-default}, ${B:?error}, ${B?error}, ${B:+alt} or ${B+alt}',
      ],
    ],
    [
      'shell quoting',
      { services: { a: { image: IMG, command: 'echo "unterminated' } } },
      ['c.yaml: services.a.command: unterminated double quote in "echo \\"unterminated"'],
    ],
  ];
  it.each(rows)('%s', (_name, doc, want, env) => {
    expect(errorsOf(doc, env ? { env } : {})).toEqual(want);
  });

  it('YAML syntax errors keep line and column', () => {
    expect(errorsOf('services:\n  a:\n    image: x\n    image: y\n')).toEqual([
      'c.yaml: line 4, column 5: Map keys must be unique',
    ]);
    expect(errorsOf('services:\n  a: [\n')).toEqual([
      'c.yaml: line 3, column 1: Flow sequence in block collection must be sufficiently indented and end with a ]',
    ]);
  });

  it('SpecError carries structured issues', () => {
    try {
      parse({ services: { api: { image: IMG, deploy: { replicas: -1 } } } });
      throw new Error('no error');
    } catch (e) {
      expect((e as SpecError).issues).toEqual([
        {
          file: 'c.yaml',
          service: 'api',
          path: 'services.api.deploy.replicas',
          message: 'expected an integer in 0..10000, got -1',
        },
      ]);
    }
  });
});

describe('scalars', () => {
  it.each([
    ['plain', 'a b', {}, 'a b'],
    ['$VAR and ${VAR}', '$A-${A}', { A: 'x' }, 'x-x'],
    ['$$ escapes', '$$A $${A}', { A: 'x' }, '$A ${A}'],
    [':- on empty', '${A:-d}', { A: '' }, 'd'],
    ['- keeps empty', '${A-d}', { A: '' }, ''],
    ['- on unset', '${A-d}', {}, 'd'],
    ['nested default', '${A:-${B:-z}}', { B: 'b' }, 'b'],
    [':+ set', '${A:+yes}', { A: '1' }, 'yes'],
    [':+ empty', '${A:+yes}', { A: '' }, ''],
    ['+ empty', '${A+yes}', { A: '' }, 'yes'],
    ['? set', '${A?boom}', { A: '' }, ''],
    ['unset → empty', 'x${A}y', {}, 'xy'],
  ] as [string, string, Record<string, string>, string][])('interpolate: %s', (_n, s, env, want) => {
    expect(interpolate(s, env)).toBe(want);
  });

  it('interpolate: required variables', () => {
    expect(() => interpolate('${A:?need A}', { A: '' })).toThrow('required variable A is empty: need A');
    expect(() => interpolate('${A?}', {})).toThrow(/^required variable A is missing$/);
  });

  it.each([
    ['a  b\tc', ['a', 'b', 'c']],
    [`'a b' "c d"`, ['a b', 'c d']],
    [`a\\ b`, ['a b']],
    [`"a\\"b\\$c\\d"`, ['a"b$c\\d']],
    [`''`, ['']],
    [`x'y'"z"`, ['xyz']],
    ['', []],
  ] as [string, string[]][])('shellSplit %j', (s, want) => {
    expect(shellSplit(s)).toEqual(want);
  });

  it.each([
    ['1m30s', 90_000],
    ['500ms', 500],
    ['1.5h', 5_400_000],
    ['0', 0],
    ['10us', 0],
    ['1h1m1s1ms', 3_661_001],
    ['10', null],
    ['s', null],
    [10, null],
  ] as [unknown, number | null][])('parseDuration %j', (v, want) => {
    expect(parseDuration(v)).toBe(want);
  });

  it.each([
    ['512M', 512 * 2 ** 20],
    ['1.5g', 1.5 * 2 ** 30],
    ['100kb', 100 * 1024],
    ['1 GiB', 2 ** 30],
    ['1024', 1024],
    [2048, 2048],
    ['lots', null],
    [-1, null],
  ] as [unknown, number | null][])('parseSize %j', (v, want) => {
    expect(parseSize(v)).toBe(want);
  });
});

// --- property: random valid services serialised with `yaml` parse to specs that validate --------

const durationArb = fc
  .tuple(fc.integer({ min: 0, max: 5 }), fc.integer({ min: 1, max: 59 }))
  .map(([m, s]) => (m > 0 ? `${m}m${s}s` : `${s}s`));
const wordArb = fc.stringMatching(/^[a-z][a-z0-9]{0,6}$/);
const serviceArb = fc.record(
  {
    command: fc.oneof(
      fc.array(wordArb, { maxLength: 4 }),
      wordArb.map((w) => `${w} --flag 'quoted arg'`),
    ),
    environment: fc.oneof(
      fc.dictionary(
        fc.stringMatching(/^[A-Z][A-Z0-9_]{0,6}$/),
        fc.oneof(wordArb, fc.integer(), fc.boolean()),
      ),
      fc.array(
        fc.tuple(fc.stringMatching(/^[A-Z][A-Z0-9_]{0,6}$/), wordArb).map(([k, v]) => `${k}=${v}`),
        {
          maxLength: 4,
        },
      ),
    ),
    ports: fc
      .uniqueArray(fc.integer({ min: 1024, max: 65_000 }), { maxLength: 4 })
      .map((ps) =>
        ps.map((p, i) => (i % 2 === 0 ? `${p}:${p}` : { target: p, published: p, protocol: 'udp' })),
      ),
    volumes: fc.uniqueArray(wordArb, { maxLength: 3 }).map((ws) => ws.map((w) => `/host/${w}:/c/${w}:ro`)),
    healthcheck: fc.record({
      test: fc.oneof(
        fc.constant(['CMD', 'true']),
        wordArb.map((w) => `${w} || exit 1`),
      ),
      interval: durationArb,
      retries: fc.integer({ min: 1, max: 10 }),
    }),
    restart: fc.constantFrom('no', 'always', 'on-failure', 'on-failure:3', 'unless-stopped'),
    stop_grace_period: durationArb,
    deploy: fc.record(
      {
        replicas: fc.integer({ min: 0, max: 20 }),
        resources: fc
          .tuple(
            fc.integer({ min: 1, max: 16_000 }),
            fc.integer({ min: 1, max: 4096 }),
            fc.integer({ min: 0, max: 4096 }),
          )
          .map(([cpu, mem, extra]) => ({
            reservations: { cpus: String(cpu / 1000), memory: `${mem}M` },
            limits: { memory: `${mem + extra}M` },
          })),
        placement: fc.record({
          constraints: fc.array(
            fc
              .tuple(wordArb, fc.constantFrom('==', '!='), wordArb)
              .map(([k, op, v]) => `node.labels.${k} ${op} ${v}`),
            { maxLength: 3 },
          ),
          max_replicas_per_node: fc.integer({ min: 1, max: 5 }),
        }),
        update_config: fc.record(
          {
            parallelism: fc.integer({ min: 0, max: 5 }),
            delay: durationArb,
            order: fc.constantFrom('stop-first', 'start-first'),
          },
          { requiredKeys: [] },
        ),
      },
      { requiredKeys: [] },
    ),
  },
  { requiredKeys: [] },
);

describe('property', () => {
  it('random valid services serialised with yaml parse to deploys whose specs validate', () => {
    fc.assert(
      fc.property(fc.dictionary(wordArb, serviceArb, { minKeys: 1, maxKeys: 4 }), (services) => {
        const doc = {
          services: Object.fromEntries(Object.entries(services).map(([k, v]) => [k, { image: IMG, ...v }])),
        };
        const r = parse(stringify(doc));
        expect(r.deploys.map((d) => d.id)).toEqual(Object.keys(services));
        for (const d of r.deploys) {
          const v = validateIntentSpec(d.spec);
          expect(v).toEqual({ ok: true, spec: d.spec });
          const svc = services[d.id]!;
          expect(d.replicas).toBe(svc.deploy?.replicas ?? 1);
          expect((d.spec.ports as unknown[] | undefined)?.length ?? 0).toBe(svc.ports?.length ?? 0);
          const res = svc.deploy?.resources;
          if (res)
            expect((d.spec.resources as { cpu: { milli: number } }).cpu.milli).toBe(
              Math.round(Number(res.reservations.cpus) * 1000),
            );
        }
      }),
      { numRuns: 150, seed: 7 },
    );
  });
});

describe('docs/spec.md examples', () => {
  const md = readFileSync(new URL('../docs/spec.md', import.meta.url), 'utf8');
  it('the Compose example parses to what the page says', () => {
    const yaml = md.split('```yaml\n')[1]!.split('```')[0]!;
    const r = parseCompose(yaml, { file: 'example.yaml', env: { REGION: 'eu' } });
    expect(r.warnings).toEqual([]);
    const [web, db] = r.deploys;
    expect([web!.id, web!.replicas, db!.id]).toEqual(['shop-web', 3, 'shop-db']);
    expect(web!.spec.resources).toEqual({ cpu: { milli: 250 }, memoryBytes: 128 * 2 ** 20, diskBytes: 0 });
    expect(web!.spec.limits).toEqual({ cpuMilli: 1000, memoryBytes: 256 * 2 ** 20 });
    expect(web!.spec.constraints).toEqual(['tier = edge']);
    expect(web!.spec.spread).toEqual({ label: 'zone' });
    expect(db!.spec.resources).toEqual({
      cpu: { milli: 2000, bind: true },
      memoryBytes: 2 ** 30,
      diskBytes: 0,
    });
    expect(db!.spec.volumes).toEqual([
      {
        type: 'volume',
        source: 'shop_dbdata',
        target: '/var/lib/db',
        readOnly: false,
        sizeBytes: 10 * 2 ** 30,
      },
    ]);
  });
  it('the JSON example is a valid intent', () => {
    const body = JSON.parse(md.split('```json\n')[1]!.split('```')[0]!);
    expect(validateIntent(body).ok).toBe(true);
  });
});

describe('published ports (host networking)', () => {
  it('a container-only port is published on the same host port, with a warning saying so', () => {
    const r = parse({ services: { web: { image: IMG, ports: ['3000', { target: 53, protocol: 'udp' }] } } });
    expect(r.deploys[0]!.spec.ports).toEqual([
      { target: 3000, protocol: 'tcp' },
      { target: 53, protocol: 'udp' },
    ]);
    expect(r.warnings.filter((w) => w.includes('.ports['))).toEqual([
      'c.yaml: services.web.ports[0]: no published port: with host networking the service is reachable on host port 3000 (docker compose would pick a random host port)',
      'c.yaml: services.web.ports[1]: no published port: with host networking the service is reachable on host port 53 (docker compose would pick a random host port)',
    ]);
  });
});
