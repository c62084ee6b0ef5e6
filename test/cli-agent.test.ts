import { execFile } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DeployView } from '../node/client.ts';
import { type AgentProc, ClusterProcs } from './cluster-procs.ts';

/**
 * The user CLI against a real agent process (`--engine sim`: placement and the reconcile loop run
 * for real, workloads are simulated): auth, deploy with progress, ps, inspect, scale, rm, nodes,
 * usage errors. Commands whose server side is not there yet are covered by test/cli-contract.test.ts.
 */

const SHOAL = resolve('node/bin/shoal.js');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function shoal(args: string[], env: Record<string, string> = {}, timeoutMs = 90_000): Promise<Run> {
  const clean: NodeJS.ProcessEnv = { NO_COLOR: '1' };
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('SHOAL_')) clean[k] = v;
  return new Promise((done) => {
    execFile(
      process.execPath,
      [SHOAL, ...args],
      { timeout: timeoutMs, killSignal: 'SIGKILL', env: { ...clean, ...env } },
      (err, stdout, stderr) => {
        done({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr });
      },
    );
  });
}

describe('shoal CLI against a real agent (sim engine)', { timeout: 240_000 }, () => {
  const c = new ClusterProcs({ prefix: 'shoal-cli-agent-' });
  let a: AgentProc;
  let addr: string;
  /** --addr and --data-dir of the agent: the CLI reads the token from <data-dir>/token. */
  let local: string[];

  beforeAll(async () => {
    a = await c.spawn({ extraArgs: ['--engine', 'sim', '--cpu', '4', '--memory', '8GiB'] });
    addr = new URL(a.api).host;
    local = ['--addr', addr, '--data-dir', a.dataDir];
  }, 120_000);

  afterAll(async () => {
    await c.stopAll();
  });

  it('without a token the CLI says how to give one (exit 1); a wrong token is rejected', async () => {
    const none = await shoal(['nodes', '--addr', addr, '--data-dir', join(c.root, 'nowhere')]);
    expect(none.code).toBe(1);
    expect(none.stdout).toBe('');
    expect(none.stderr).toMatch(
      /^shoal: the agent at 127\.0\.0\.1:\d+ wants a token: pass --token or set SHOAL_TOKEN/,
    );
    const wrong = await shoal(['nodes', '--addr', addr, '--token', 'not-the-token-at-all']);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/rejected the token \(invalid bearer token/);
  });

  it('the token comes from --token, SHOAL_TOKEN, or the local agent’s <data-dir>/token', async () => {
    const token = c.token(0);
    for (const r of [
      await shoal(['nodes', '--json', '--addr', addr, '--token', token]),
      await shoal(['nodes', '--json'], { SHOAL_ADDR: addr, SHOAL_TOKEN: token }),
      await shoal(['nodes', '--json', ...local]),
      await shoal(['nodes', '--json'], { SHOAL_ADDR: addr, SHOAL_DATA_DIR: a.dataDir }),
    ]) {
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect((JSON.parse(r.stdout) as { id: string }[]).map((n) => n.id)).toEqual([a.id]);
    }
  });

  it('GET /v1/openapi.json needs no token and lists the deploy routes', async () => {
    const res = await fetch(`${a.api}/v1/openapi.json`);
    expect(res.status).toBe(200);
    const doc = (await res.json()) as { openapi: string; paths: Record<string, unknown> };
    expect(doc.openapi).toBe('3.1.0');
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining(['/v1/deploys', '/v1/deploys/{id}', '/v1/nodes', '/v1/health']),
    );
  });

  it('deploy waits until every replica runs, showing progress on stderr; ps, inspect, scale, rm', async () => {
    const file = join(c.root, 'web.json');
    writeFileSync(
      file,
      JSON.stringify({
        id: 'web',
        name: 'web',
        replicas: 2,
        spec: { image: 'nginx', resources: { cpu: { milli: 500 }, memoryBytes: 256 * 2 ** 20 } },
      }),
    );
    const d = await shoal(['deploy', file, ...local, '--timeout', '30']);
    expect(d.stdout).toBe('');
    expect(d.code).toBe(0);
    expect(d.stderr).toMatch(/^accepted: web\n/);
    expect(d.stderr.trimEnd().split('\n').at(-1)).toBe('web: 2/2 running');

    const ps = await shoal(['ps', ...local]);
    expect(ps.code).toBe(0);
    const lines = ps.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^DEPLOY\s+REPLICA\s+HOST\s+STATUS\s+HEALTH\s+GEN\/VERSION\s+AGE$/);
    expect(lines.slice(1)).toHaveLength(2);
    for (const [i, l] of lines.slice(1).entries()) {
      expect(l).toMatch(
        new RegExp(`^web\\s+${i}\\s+…${a.id.slice(-8)}\\s+running\\s+-\\s+\\d+/v1\\s+\\d+[smhd]$`),
      );
    }

    const inspect = await shoal(['inspect', 'web', ...local]);
    expect(inspect.code).toBe(0);
    const view = JSON.parse(inspect.stdout) as DeployView;
    expect(view).toMatchObject({ id: 'web', replicas: 2, placed: 2 });
    expect(inspect.stdout).toBe(`${JSON.stringify(view, null, 2)}\n`);

    const scale = await shoal(['scale', 'web', '3', ...local]);
    expect(scale).toMatchObject({ code: 0, stdout: 'web: scaled to 3 replicas\n', stderr: '' });
    const deadline = Date.now() + 15_000;
    let running = 0;
    while (Date.now() < deadline && running < 3) {
      const r = await shoal(['ps', 'web', '--json', ...local]);
      running = (JSON.parse(r.stdout) as DeployView[])[0]!.instances.filter(
        (x) => x.status === 'running',
      ).length;
    }
    expect(running).toBe(3);

    const rm = await shoal(['rm', 'web', ...local]);
    expect(rm).toMatchObject({ code: 0, stdout: 'removed web\n' });
    expect((await shoal(['ps', ...local])).stdout).toBe('no deploys\n');
    const gone = await shoal(['inspect', 'web', ...local]);
    expect(gone).toMatchObject({ code: 1, stdout: '', stderr: 'shoal: no deploy web\n' });
  });

  it('deploy --json prints only JSON on stdout: the accepted deploys once running', async () => {
    const file = join(c.root, 'api.json');
    writeFileSync(
      file,
      JSON.stringify({
        id: 'api',
        name: 'api',
        spec: { image: 'x', resources: { cpu: { milli: 100 }, memoryBytes: 128 * 2 ** 20 } },
      }),
    );
    const r = await shoal(['deploy', file, '--json', ...local]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout) as { deploys: DeployView[]; warnings: string[] };
    expect(out.warnings).toEqual([]);
    expect(out.deploys.map((x) => [x.id, x.instances[0]?.status])).toEqual([['api', 'running']]);
    await shoal(['rm', 'api', ...local]);
  });

  it('a deploy that cannot be placed times out with exit 1, naming why it is pending', async () => {
    const file = join(c.root, 'huge.json');
    writeFileSync(
      file,
      JSON.stringify({
        id: 'huge',
        name: 'huge',
        spec: { resources: { cpu: { milli: 100 }, memoryBytes: 64 * 2 ** 30 } },
      }),
    );
    const r = await shoal(['deploy', file, ...local, '--timeout', '3']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /^shoal: huge: timed out after 3 s \(huge: 0\/1 running, pending: .*memory: need 64\.0 GiB/m,
    );
    await shoal(['rm', 'huge', ...local]);
  });

  it('bad input: the agent’s message names the field (exit 1); a malformed command line exits 2', async () => {
    const file = join(c.root, 'bad.json');
    writeFileSync(
      file,
      JSON.stringify({ name: 'bad', spec: { resources: { cpu: { milli: 'lots' }, memoryBytes: 1 } } }),
    );
    const bad = await shoal(['deploy', file, ...local]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^shoal: spec\.resources\.cpu\.milli: /);
    const notJson = join(c.root, 'broken.json');
    writeFileSync(notJson, '{"name": ');
    expect(await shoal(['deploy', notJson, ...local])).toMatchObject({
      code: 1,
      stderr: expect.stringMatching(/broken\.json: not valid JSON/),
    });
    expect(await shoal(['scale', 'web', 'many', ...local])).toMatchObject({
      code: 2,
      stderr: 'shoal: <replicas>: expected an integer from 0 to 10000, got "many"\n',
    });
    expect((await shoal(['ps', '--frobnicate', ...local])).code).toBe(2);
    expect((await shoal(['scale', 'web'])).code).toBe(2);
  });
});

describe('shoal agent --token-file', { timeout: 180_000 }, () => {
  const c = new ClusterProcs({ prefix: 'shoal-cli-tokenfile-' });
  afterAll(async () => {
    await c.stopAll();
  });

  it('uses the operator’s token (one token for every agent) and makes no <data-dir>/token', async () => {
    const file = join(c.root, 'shared.token');
    writeFileSync(file, 'shared-cluster-token-0123456789\n', { mode: 0o600 });
    const b = await c.spawn({ extraArgs: ['--engine', 'sim', '--token-file', file] });
    expect(existsSync(join(b.dataDir, 'token'))).toBe(false);
    const addr = new URL(b.api).host;
    const ok = await shoal(['nodes', '--json', '--addr', addr, '--token', 'shared-cluster-token-0123456789']);
    expect(ok.code).toBe(0);
    expect((JSON.parse(ok.stdout) as { id: string }[])[0]!.id).toBe(b.id);
    const bad = await shoal([
      'agent',
      '--token-file',
      join(c.root, 'missing'),
      '--data-dir',
      join(c.root, 'x'),
    ]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^shoal: --token-file: cannot read .*missing \(ENOENT\)/);
  });
});
