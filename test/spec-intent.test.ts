import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { DeployIntent, JsonObject } from '../crdt/types.ts';
import { parseHealthcheck } from '../node/core/health.ts';
import { parseHooks } from '../node/core/hooks.ts';
import { placementSpec } from '../node/core/placement-adapter.ts';
import {
  intentSpecJsonSchema,
  joinPath,
  type SpecIssue,
  validateIntent,
  validateIntentSpec,
} from '../node/spec/intent.ts';

const R = { cpu: { milli: 500 }, memoryBytes: 1024 };
const RN = { cpu: { milli: 500 }, memoryBytes: 1024, diskBytes: 0 };

function ok(spec: unknown): JsonObject {
  const r = validateIntentSpec(spec);
  if (!r.ok) throw new Error(`unexpected issues: ${JSON.stringify(r.issues)}`);
  return r.spec;
}

function issues(spec: unknown): SpecIssue[] {
  const r = validateIntentSpec(spec);
  if (r.ok) throw new Error(`expected issues, got ${JSON.stringify(r.spec)}`);
  return r.issues;
}

describe('validateIntentSpec: normalisation', () => {
  const cases: [string, unknown, JsonObject][] = [
    ['minimal: diskBytes defaults to 0', { resources: R }, { resources: RN }],
    [
      'process fields pass through',
      {
        resources: R,
        image: 'shoal/busybox:latest',
        command: ['/bin/sh', '-c'],
        args: ['echo hi'],
        env: { A: '1', 'weird.name': '' },
        workdir: '/srv',
        user: '1000:1000',
        labels: { 'com.example.tier': 'web' },
        engine: 'docker',
        stopTimeoutMs: 30_000,
      },
      {
        resources: RN,
        image: 'shoal/busybox:latest',
        command: ['/bin/sh', '-c'],
        args: ['echo hi'],
        env: { A: '1', 'weird.name': '' },
        workdir: '/srv',
        user: '1000:1000',
        labels: { 'com.example.tier': 'web' },
        engine: 'docker',
        stopTimeoutMs: 30_000,
      },
    ],
    [
      'http check: defaults, expectStatus code → [code, code]',
      { resources: R, healthcheck: { type: 'http', port: 80, expectStatus: 204 } },
      {
        resources: RN,
        healthcheck: {
          type: 'http',
          port: 80,
          path: '/',
          expectStatus: [204, 204],
          interval: 10_000,
          timeout: 2_000,
          retries: 3,
          startPeriod: 0,
        },
      },
    ],
    [
      'null healthcheck and hooks are dropped; a null hook is dropped',
      { resources: R, healthcheck: null, hooks: { afterStart: null, beforeStop: { command: ['x'] } } },
      { resources: RN, hooks: { beforeStop: { command: ['x'], force: false, timeoutMs: 10_000 } } },
    ],
    [
      'ports and volumes defaults',
      {
        resources: R,
        ports: [{ target: 80 }, { target: 53, published: 53, protocol: 'udp' }],
        volumes: [
          { type: 'volume', target: '/data' },
          { type: 'bind', source: '/etc/hosts', target: '/etc/hosts', readOnly: true },
          { type: 'tmpfs', target: '/run', sizeBytes: 1024 },
        ],
      },
      {
        resources: RN,
        ports: [
          { target: 80, protocol: 'tcp' },
          { target: 53, published: 53, protocol: 'udp' },
        ],
        volumes: [
          { type: 'volume', target: '/data', readOnly: false },
          { type: 'bind', source: '/etc/hosts', target: '/etc/hosts', readOnly: true },
          { type: 'tmpfs', target: '/run', readOnly: false, sizeBytes: 1024 },
        ],
      },
    ],
    [
      'update, rollbackConfig, restartPolicy and job defaults',
      {
        resources: R,
        update: {},
        rollbackConfig: { parallelism: 0 },
        restartPolicy: {},
        job: {},
        restart: 'no',
      },
      {
        resources: RN,
        update: {
          parallelism: 1,
          delayMs: 0,
          monitorMs: 5_000,
          maxFailureRatio: 0,
          order: 'stop-first',
          failureAction: 'rollback',
        },
        rollbackConfig: {
          parallelism: 0,
          delayMs: 0,
          monitorMs: 5_000,
          maxFailureRatio: 0,
          order: 'stop-first',
          failureAction: 'pause',
        },
        restartPolicy: { delayMs: 1_000 },
        job: { retries: 0, backoffMs: 1_000 },
        restart: 'no',
      },
    ],
    [
      'placement keys',
      {
        resources: { cpu: { milli: 2000, bind: true }, memoryBytes: 1, gpu: { milli: 500, model: 'A100' } },
        limits: { cpuMilli: 4000 },
        constraints: ['zone in (a, b)', '!draining'],
        spread: {},
        maxPerHost: 2,
        antiAffinity: false,
        hostLimit: 3,
      },
      {
        resources: {
          cpu: { milli: 2000, bind: true },
          memoryBytes: 1,
          diskBytes: 0,
          gpu: { milli: 500, model: 'A100' },
        },
        limits: { cpuMilli: 4000 },
        constraints: ['zone in (a, b)', '!draining'],
        spread: {},
        maxPerHost: 2,
        antiAffinity: false,
        hostLimit: 3,
      },
    ],
  ];
  it.each(cases)('%s', (_name, input, want) => {
    const got = ok(input);
    expect(got).toEqual(want);
    expect(ok(got)).toEqual(got); // idempotent
  });
});

describe('validateIntentSpec: errors name the field', () => {
  const cases: [string, unknown, SpecIssue[]][] = [
    ['not an object', 5, [{ path: 'spec', message: 'expected an object (the deploy spec), got 5' }]],
    [
      'resources missing',
      {},
      [
        {
          path: 'spec.resources',
          message: 'required: expected an object {cpu: {milli, bind?}, memoryBytes, diskBytes?, gpu?}',
        },
      ],
    ],
    [
      'memoryBytes missing and a string cpu',
      { resources: { cpu: { milli: '1' } } },
      [
        { path: 'spec.resources.cpu.milli', message: 'expected a non-negative integer, got "1"' },
        { path: 'spec.resources.memoryBytes', message: 'required: expected a non-negative integer' },
      ],
    ],
    [
      'unknown resource key',
      { resources: { ...R, disk: 5 } },
      [{ path: 'spec.resources.disk', message: 'unknown field (allowed: cpu, memoryBytes, diskBytes, gpu)' }],
    ],
    [
      'exec check argv',
      { resources: R, healthcheck: { type: 'exec', command: [1, 'a'] } },
      [{ path: 'spec.healthcheck.command[0]', message: 'expected a string, got 1' }],
    ],
    [
      'exec check with an empty command name',
      { resources: R, healthcheck: { type: 'exec', command: [''] } },
      [{ path: 'spec.healthcheck.command[0]', message: 'expected a command name' }],
    ],
    [
      'unknown check type',
      { resources: R, healthcheck: { type: 'udp', port: 1 } },
      [{ path: 'spec.healthcheck.type', message: 'expected one of tcp, http, exec' }],
    ],
    [
      'typo in a check field',
      { resources: R, healthcheck: { type: 'tcp', port: 1, intervall: 5 } },
      [
        {
          path: 'spec.healthcheck.intervall',
          message: 'unknown field (allowed: type, port, interval, timeout, retries, startPeriod)',
        },
      ],
    ],
    [
      'http path and status range',
      { resources: R, healthcheck: { type: 'http', port: 80, path: 'health', expectStatus: [400, 200] } },
      [
        {
          path: 'spec.healthcheck.path',
          message: `expected a path starting with '/' (printable ASCII, no spaces, at most 2048 characters), got "health"`,
        },
        { path: 'spec.healthcheck.expectStatus', message: 'empty range: the first code is above the second' },
      ],
    ],
    [
      'hook timeout too long',
      { resources: R, hooks: { afterStart: { command: ['x'], timeoutMs: 600_001 } } },
      [{ path: 'spec.hooks.afterStart.timeoutMs', message: 'expected an integer in 1..600000, got 600001' }],
    ],
    [
      'reserved label, env key with =',
      { resources: R, labels: { 'shoal.deploy': 'x', 'Shoal.Host': 'y' }, env: { 'A=B': 'x' } },
      [
        { path: 'spec.env["A=B"]', message: "invalid key: expected a variable name (no '=')" },
        { path: 'spec.labels["Shoal.Host"]', message: 'label keys starting with "shoal." are reserved' },
        { path: 'spec.labels["shoal.deploy"]', message: 'label keys starting with "shoal." are reserved' },
      ],
    ],
    [
      'limits below the request',
      { resources: R, limits: { cpuMilli: 100, memoryBytes: 10 } },
      [
        { path: 'spec.limits.cpuMilli', message: '100 is below the request of 500 (resources.cpu.milli)' },
        {
          path: 'spec.limits.memoryBytes',
          message: '10 is below the request of 1024 (resources.memoryBytes)',
        },
      ],
    ],
    [
      'constraint syntax',
      { resources: R, constraints: ['zone ==', 'ok'] },
      [
        {
          path: 'spec.constraints[0]',
          message: 'constraint "zone ==": expected a value after \'==\', found end of input at column 8',
        },
      ],
    ],
    [
      'port published twice (tcp and udp of one number are two ports)',
      {
        resources: R,
        ports: [{ target: 8080 }, { target: 8080, published: 8080 }, { target: 8080, protocol: 'udp' }],
      },
      [{ path: 'spec.ports[1].target', message: '8080/tcp is already published by ports[0]' }],
    ],
    [
      'a port mapping (published ≠ target) is refused: host networking',
      { resources: R, ports: [{ target: 80, published: 8080 }] },
      [
        {
          path: 'spec.ports[0].published',
          message:
            'must equal target (80), got 8080: published ports use host networking, so the workload listens on the host port itself (no port mapping)',
        },
      ],
    ],
    [
      'hostIp is refused (host networking), and must be an address to begin with',
      {
        resources: R,
        ports: [
          { target: 81, hostIp: '127.0.0.1' },
          { target: 82, hostIp: 'localhost' },
        ],
      },
      [
        {
          path: 'spec.ports[0].hostIp',
          message:
            'not supported: published ports use host networking, so the workload itself chooses the address it listens on (configure it to listen on that address)',
        },
        { path: 'spec.ports[1].hostIp', message: 'expected an IPv4 or IPv6 address, got "localhost"' },
      ],
    ],
    [
      'mount rules',
      {
        resources: R,
        volumes: [
          { type: 'bind', target: '/a' },
          { type: 'bind', source: 'rel', target: '/b', sizeBytes: 5 },
          { type: 'tmpfs', source: 'x', target: '/c' },
          { type: 'volume', source: 'ok', target: '/d' },
          { type: 'volume', source: 'bad name', target: '/e' },
        ],
      },
      [
        { path: 'spec.volumes[0].source', message: 'a bind mount needs a source (an absolute host path)' },
        { path: 'spec.volumes[1].source', message: 'expected an absolute host path (starting with /)' },
        { path: 'spec.volumes[1].sizeBytes', message: 'only volume and tmpfs mounts have a size' },
        { path: 'spec.volumes[2].source', message: 'a tmpfs mount has no source' },
        {
          path: 'spec.volumes[4].source',
          message: 'expected a volume name matching ^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$',
        },
      ],
    ],
    [
      'mount target twice, relative target',
      {
        resources: R,
        volumes: [
          { type: 'volume', target: '/c' },
          { type: 'tmpfs', target: '/c' },
        ],
        workdir: 'rel',
      },
      [
        {
          path: 'spec.workdir',
          message:
            'expected an absolute working directory path (starting with /, at most 4096 characters, no NUL), got "rel"',
        },
        { path: 'spec.volumes[1].target', message: '/c is already mounted by volumes[0]' },
      ],
    ],
    [
      'restart value',
      { resources: R, restart: 'sometimes' },
      [{ path: 'spec.restart', message: 'expected one of no, on-failure, always, got "sometimes"' }],
    ],
    [
      'a job never restarts always',
      { resources: R, job: {}, restart: 'always' },
      [
        {
          path: 'spec.restart',
          message:
            'a job runs to completion: restart must be no or on-failure (job.retries bounds the retries)',
        },
      ],
    ],
    [
      'process engine needs a command',
      { resources: R, engine: 'process' },
      [
        {
          path: 'spec.command',
          message: 'the process engine needs a command (there is no image entrypoint)',
        },
      ],
    ],
    [
      'rollback cannot roll back; ratio range',
      { resources: R, rollbackConfig: { failureAction: 'rollback' }, update: { maxFailureRatio: 2 } },
      [
        { path: 'spec.update.maxFailureRatio', message: 'expected a number in 0..1, got 2' },
        {
          path: 'spec.rollbackConfig.failureAction',
          message: 'expected one of pause, continue, got "rollback"',
        },
      ],
    ],
    [
      'relative workdir, empty spread label, maxPerHost 0',
      { resources: R, workdir: 'srv', spread: { label: '' }, maxPerHost: 0 },
      [
        {
          path: 'spec.workdir',
          message:
            'expected an absolute working directory path (starting with /, at most 4096 characters, no NUL), got "srv"',
        },
        { path: 'spec.spread.label', message: 'expected a label key (1..256 characters, no NUL), got ""' },
        { path: 'spec.maxPerHost', message: 'expected an integer in 1..10000, got 0' },
      ],
    ],
  ];
  it.each(cases)('%s', (_name, input, want) => {
    expect(issues(input)).toEqual(want);
  });

  it('lists every unknown top-level key with the allowed ones', () => {
    const got = issues({ resources: R, imagee: 'x', replicas: 2 });
    expect(got.map((i) => i.path)).toEqual(['spec.imagee', 'spec.replicas']);
    expect(got[0]!.message).toMatch(/^unknown field \(allowed: image, command, args, env, .*, job\)$/);
  });

  it('joinPath quotes keys that are not identifiers', () => {
    expect(joinPath('spec', ['env', 'A.B', 3, 'x-y'])).toBe('spec.env["A.B"][3].x-y');
  });
});

describe('validateIntent', () => {
  it('checks name, replicas, strategy and hostLimit against the strategy', () => {
    const r = validateIntent({ name: 'Web', replicas: -1, strategy: 'best', spec: { resources: R } });
    expect(r).toEqual({
      ok: false,
      issues: [
        {
          path: 'name',
          message: 'expected 1-63 characters of a-z, 0-9 and -, starting with a letter or digit',
        },
        { path: 'replicas', message: 'expected an integer in 0..10000' },
        { path: 'strategy', message: 'expected one of binpack, spread, auto, global, fill, each' },
      ],
    });
    expect(
      validateIntent({ name: 'web', replicas: 2, strategy: 'binpack', spec: { resources: R, hostLimit: 2 } }),
    ).toEqual({
      ok: false,
      issues: [{ path: 'spec.hostLimit', message: 'only applies to the per-host strategies fill and each' }],
    });
    expect(
      validateIntent({ name: 'web', replicas: 2, strategy: 'each', spec: { resources: R, hostLimit: 2 } }),
    ).toEqual({
      ok: true,
      spec: { name: 'web', replicas: 2, strategy: 'each', spec: { resources: RN, hostLimit: 2 } },
    });
  });
});

describe('JSON Schema', () => {
  it('describes every key, requires resources and forbids unknown keys', () => {
    const s = intentSpecJsonSchema() as {
      type: string;
      properties: Record<string, unknown>;
      required: string[];
      additionalProperties: boolean;
    };
    expect(s.type).toBe('object');
    expect(Object.keys(s.properties)).toEqual([
      'image',
      'command',
      'args',
      'env',
      'workdir',
      'user',
      'labels',
      'ports',
      'volumes',
      'restart',
      'restartPolicy',
      'stopTimeoutMs',
      'healthcheck',
      'hooks',
      'engine',
      'resources',
      'limits',
      'constraints',
      'spread',
      'maxPerHost',
      'antiAffinity',
      'hostLimit',
      'update',
      'rollbackConfig',
      'job',
    ]);
    expect(s.required).toEqual(['resources']);
    expect(s.additionalProperties).toBe(false);
    expect(JSON.stringify(s)).toContain('"enum":["no","on-failure","always"]');
  });
});

// --- property: valid specs normalise idempotently and the older parsers accept them -----------

const argvArb = fc.array(fc.stringMatching(/^[a-z/][a-z0-9 ./-]{0,10}$/), { minLength: 1, maxLength: 4 });
const timingArb = fc.record(
  {
    interval: fc.integer({ min: 1, max: 60_000 }),
    timeout: fc.integer({ min: 1, max: 60_000 }),
    retries: fc.integer({ min: 1, max: 10 }),
    startPeriod: fc.integer({ min: 0, max: 60_000 }),
  },
  { requiredKeys: [] },
);
const checkArb = fc.oneof(
  fc.tuple(fc.integer({ min: 1, max: 65_535 }), timingArb).map(([port, t]) => ({ type: 'tcp', port, ...t })),
  fc
    .tuple(fc.integer({ min: 1, max: 65_535 }), fc.integer({ min: 100, max: 599 }), timingArb)
    .map(([port, code, t]) => ({ type: 'http', port, path: '/healthz', expectStatus: code, ...t })),
  fc.tuple(argvArb, timingArb).map(([command, t]) => ({ type: 'exec', command, ...t })),
);
const specArb = fc
  .record(
    {
      cpu: fc.integer({ min: 0, max: 64_000 }),
      mem: fc.integer({ min: 0, max: 2 ** 40 }),
      extraCpu: fc.integer({ min: 0, max: 4000 }),
      image: fc.constantFrom('a', 'shoal/busybox:latest'),
      command: argvArb,
      env: fc.dictionary(
        fc.stringMatching(/^[A-Z_]{1,8}$/),
        fc.string({ maxLength: 8 }).map((s) => s.replace(/\0/g, '')),
      ),
      healthcheck: checkArb,
      hooks: fc.record({ afterStart: fc.record({ command: argvArb, force: fc.boolean() }) }),
      constraints: fc.array(fc.constantFrom('zone = a', 'ssd', '!gpu', 'rack in (r1, r2)'), { maxLength: 3 }),
      spread: fc.constantFrom({}, { label: 'zone' }),
      maxPerHost: fc.integer({ min: 1, max: 5 }),
      antiAffinity: fc.boolean(),
      restart: fc.constantFrom('no', 'on-failure', 'always'),
    },
    { requiredKeys: ['cpu', 'mem'] },
  )
  .map((r) => {
    const spec: Record<string, unknown> = { resources: { cpu: { milli: r.cpu }, memoryBytes: r.mem } };
    if (r.extraCpu !== undefined) spec.limits = { cpuMilli: r.cpu + r.extraCpu };
    for (const k of [
      'image',
      'command',
      'env',
      'healthcheck',
      'hooks',
      'constraints',
      'spread',
      'maxPerHost',
      'antiAffinity',
      'restart',
    ] as const) {
      if (r[k] !== undefined) spec[k] = r[k];
    }
    return spec;
  });

describe('property', () => {
  it('valid specs normalise idempotently; placementSpec, parseHealthcheck and parseHooks accept them', () => {
    fc.assert(
      fc.property(specArb, (input) => {
        const spec = ok(input);
        expect(ok(spec)).toEqual(spec);
        const intent: DeployIntent = {
          id: 'd1',
          name: 'd1',
          replicas: 1,
          strategy: 'binpack',
          spec,
          revision: [0, 0, 'a'],
        };
        const p = placementSpec(intent);
        expect(p.request.resources.cpu.milli).toBe((input.resources as typeof R).cpu.milli);
        const hc = parseHealthcheck(spec);
        expect(hc?.type).toBe((input.healthcheck as { type?: string } | undefined)?.type);
        if (hc?.type === 'http') {
          const code = (input.healthcheck as { expectStatus: number }).expectStatus;
          expect(hc.expectStatus).toEqual({ min: code, max: code });
        }
        expect(parseHooks(spec)?.afterStart?.force).toBe(
          (input.hooks as { afterStart: { force: boolean } } | undefined)?.afterStart.force,
        );
      }),
      { numRuns: 300, seed: 5 },
    );
  });
});
