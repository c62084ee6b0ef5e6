import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ApiBackend, type ApiServer, type NodeInfo, type SelfPatch, startApi } from '../node/api.ts';
import { patchHost } from '../node/backend.ts';
import { HostConfigError, type HostFacts } from '../node/host.ts';
import type { MetricsSnapshot } from '../node/metrics.ts';

const SHOAL = resolve('node/bin/shoal.js');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** This process's environment without SHOAL_* variables (they would act as flags). */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { NO_COLOR: '1' };
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('SHOAL_')) env[k] = v;
  return env;
}

/** Run the real CLI as a child process (async: the API server under test lives in this process). */
function shoal(args: string[], timeoutMs = 20_000): Promise<Run> {
  return new Promise((done) => {
    execFile(
      process.execPath,
      [SHOAL, ...args],
      { timeout: timeoutMs, killSignal: 'SIGKILL', env: cleanEnv() },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
        done({ code, stdout, stderr });
      },
    );
  });
}

/** Minimal backend: two members and a patchable self that records what the API handed it. */
class CliBackend implements ApiBackend {
  readonly patches: SelfPatch[] = [];
  /** Make the next patch fail as a bad value would (→ 400 with this message). */
  rejectNext: HostConfigError | undefined;
  host: HostFacts = {
    cores: 8,
    cpuMilli: 8000,
    memoryBytes: 16 * 2 ** 30,
    diskBytes: 0,
    gpus: [],
    labels: {},
  };

  id(): string {
    return 'agent-one';
  }
  nodes(): NodeInfo[] {
    const capacity = { cpuMilli: this.host.cpuMilli, memory: this.host.memoryBytes, gpus: [] };
    return [
      {
        id: 'agent-one',
        status: 'alive',
        incarnation: 2,
        addrs: ['/ip4/127.0.0.1/tcp/4701/p2p/agent-one'],
        capacity,
        allocated: { cpuMilli: 500, memory: 2 ** 30 },
        labels: this.host.labels,
        statusAgeMs: 12_000,
        self: true,
      },
      {
        id: 'agent-two',
        status: 'dead',
        incarnation: 5,
        addrs: [],
        capacity: null,
        allocated: null,
        labels: {},
        statusAgeMs: 300_000,
        self: false,
      },
    ];
  }
  patchSelf(patch: SelfPatch): NodeInfo {
    this.patches.push(patch);
    const reject = this.rejectNext;
    this.rejectNext = undefined;
    if (reject) throw reject;
    this.host = patchHost(this.host, patch);
    return this.nodes()[0]!;
  }
  state(): Record<string, unknown> & { hash: string } {
    return { hash: 'cd'.repeat(32) };
  }
  health(): Record<string, unknown> {
    return { status: 'ok' };
  }
  metrics(): MetricsSnapshot {
    throw new Error('GET /metrics is not used by the CLI');
  }
}

/** A TCP port that nothing listens on (bound once, then released). */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const addr = srv.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

describe('shoal CLI', () => {
  const backend = new CliBackend();
  let api: ApiServer;
  let addr: string;
  let dir: string;

  beforeAll(async () => {
    api = await startApi(backend, '127.0.0.1:0');
    addr = `127.0.0.1:${api.port}`;
    dir = mkdtempSync(join(tmpdir(), 'shoal-cli-'));
  });

  afterAll(async () => {
    await api?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('nodes prints a table with every member, its status and status age', async () => {
    const r = await shoal(['nodes', '--addr', addr]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^ID\s+STATUS\s+CPU\s+MEMORY\s+GPUS\s+LABELS\s+ADDRESS$/);
    expect(lines[1]).toMatch(/^agent-one \*\s+alive 12s\s+0\.5\/8\s+1\.0 GiB\/16 GiB\s+0\s+-\s+\/ip4\//);
    expect(lines[2]).toMatch(/^agent-two\s+dead 5m\s+-\s+-\s+0\s+-\s+-$/);
  });

  it('nodes --json prints the API answer as JSON', async () => {
    const r = await shoal(['nodes', '--json', '--addr', `http://${addr}/`]);
    expect(r.code).toBe(0);
    const nodes = JSON.parse(r.stdout) as NodeInfo[];
    expect(nodes.map((n) => n.id)).toEqual(['agent-one', 'agent-two']);
  });

  it('node set --label sends a PATCH replacing the labels and prints the node', async () => {
    const before = backend.patches.length;
    const r = await shoal(['node', 'set', '--label', 'zone=x', '--label', 'rack=r7', '--addr', addr]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(backend.patches.slice(before)).toEqual([{ labels: { zone: 'x', rack: 'r7' } }]);
    expect(r.stdout).toMatch(/^ID\s+STATUS/);
    expect(r.stdout).toMatch(/agent-one \*.*rack=r7,zone=x|agent-one \*.*zone=x,rack=r7/);
  });

  it('node set --cpu --memory --json sends both and prints JSON', async () => {
    const before = backend.patches.length;
    const r = await shoal(['node', 'set', '--cpu', '2.5', '--memory', '4GiB', '--json', '--addr', addr]);
    expect(r.code).toBe(0);
    expect(backend.patches.slice(before)).toEqual([{ cpu: '2.5', memory: '4GiB' }]);
    expect((JSON.parse(r.stdout) as NodeInfo).capacity).toMatchObject({ cpuMilli: 2500 });
  });

  it('node set with a bad value fails before calling the agent, naming the flag', async () => {
    const before = backend.patches.length;
    const r = await shoal(['node', 'set', '--memory', '8 potatoes', '--addr', addr]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      'shoal: --memory: cannot read "8 potatoes" as a size (examples: 512MiB, 8GiB, 2G, 1073741824)\n',
    );
    expect(backend.patches.length).toBe(before);
  });

  it('node set with nothing to set says what to give', async () => {
    const r = await shoal(['node', 'set', '--addr', addr]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^shoal: nothing to set: give --label/);
  });

  it('node set checks labels locally, naming --label', async () => {
    const r = await shoal(['node', 'set', '--label', `zone=${'v'.repeat(300)}`, '--addr', addr]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('shoal: --label: value of "zone" is longer than 256 characters\n');
  });

  it('API errors print as "shoal: <message>" with exit code 1', async () => {
    backend.rejectNext = new HostConfigError('labels.zone', 'reserved by the cluster');
    const r = await shoal(['node', 'set', '--label', 'zone=x', '--addr', addr]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe('shoal: labels.zone: reserved by the cluster\n');
  });

  it('an unreachable --addr prints a clear error naming the address and exits 1', async () => {
    const dead = `127.0.0.1:${await closedPort()}`;
    const r = await shoal(['nodes', '--addr', dead]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(new RegExp(`^shoal: cannot reach an agent at ${dead}: .*ECONNREFUSED`));
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('keygen writes a key file and refuses to overwrite it without --force', async () => {
    const file = join(dir, 'cluster.key');
    const first = await shoal(['keygen', file]);
    expect(first.code).toBe(0);
    const key = readFileSync(file, 'utf8');
    expect(key).toMatch(/^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}\n?$/);

    const again = await shoal(['keygen', file]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^shoal: .*cluster\.key already exists; refusing to overwrite .*--force/);
    expect(readFileSync(file, 'utf8')).toBe(key);

    const forced = await shoal(['keygen', '--force', file]);
    expect(forced.code).toBe(0);
    expect(readFileSync(file, 'utf8')).not.toBe(key);
  });

  it('agent --cpu abc fails fast naming --cpu, without creating the data dir', async () => {
    const dataDir = join(dir, 'agent-data');
    const started = Date.now();
    const r = await shoal(['agent', '--cpu', 'abc', '--data-dir', dataDir, '--api', '127.0.0.1:0'], 20_000);
    expect(r.code).not.toBe(0);
    expect(r.code).not.toBeNull(); // null: killed by the timeout (it hung)
    expect(r.stderr).toMatch(/^shoal: --cpu: "abc" is not a core count/);
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(existsSync(dataDir)).toBe(false);
  });

  it('agent --publish-gap-ms with a bad value fails fast naming the flag', async () => {
    const r = await shoal(['agent', '--publish-gap-ms', '-5', '--data-dir', join(dir, 'agent-data3')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /^shoal: --publish-gap-ms: expected whole milliseconds from 0 to 10000, got "-5"/,
    );
  });

  it('agent --direct-awards takes on or off only, and says which', async () => {
    const r = await shoal(['agent', '--direct-awards', 'maybe', '--data-dir', join(dir, 'agent-data5')]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(
      /--direct-awards <on\|off>' argument 'maybe' is invalid\. Allowed choices are on, off/,
    );
    expect(existsSync(join(dir, 'agent-data5'))).toBe(false);
  });

  it('agent --tombstone-ttl with a bad or too short value fails fast naming the flag', async () => {
    const bad = await shoal(['agent', '--tombstone-ttl', 'soon', '--data-dir', join(dir, 'agent-data4')]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(
      /^shoal: --tombstone-ttl: expected a duration like 30s, 5m, 1h30m or 2d, got "soon"/,
    );
    const short = await shoal(['agent', '--tombstone-ttl', '10m', '--data-dir', join(dir, 'agent-data4')]);
    expect(short.code).toBe(1);
    expect(short.stderr).toMatch(/^shoal: --tombstone-ttl: expected 0s \(never\) or at least 1h/);
    expect(existsSync(join(dir, 'agent-data4'))).toBe(false);
  });

  it('agent --api with a bad address fails fast naming --api', async () => {
    const r = await shoal(['agent', '--api', 'nowhere', '--data-dir', join(dir, 'agent-data2')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^shoal: --api: expected host:port, got "nowhere"/);
  });
});
