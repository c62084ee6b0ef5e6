import { execFile } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/**
 * `shoal run` against a scripted agent API: the races of a short job's logs. A follow opened
 * before the container started ends at once and empty (Docker follows running containers only);
 * the CLI must still print what the job wrote once it has ended.
 */

const SHOAL = resolve('node/bin/shoal.js');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function shoal(args: string[]): Promise<Run> {
  const env: NodeJS.ProcessEnv = { NO_COLOR: '1' };
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('SHOAL_')) env[k] = v;
  return new Promise((done) => {
    execFile(process.execPath, [SHOAL, ...args], { timeout: 30_000, env }, (err, stdout, stderr) => {
      done({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr });
    });
  });
}

describe('shoal run: a job’s output', () => {
  let server: Server;
  let addr: string;
  const calls: string[] = [];

  beforeAll(async () => {
    server = createServer((req: IncomingMessage, res: ServerResponse) => {
      const url = new URL(req.url ?? '/', 'http://x');
      calls.push(`${req.method} ${url.pathname}${url.search}`);
      const json = (code: number, v: unknown) => {
        res.writeHead(code, { 'content-type': 'application/json' });
        res.end(JSON.stringify(v));
      };
      req.resume();
      if (req.method === 'POST' && url.pathname === '/v1/jobs') {
        return json(201, { deploys: [{ id: 'job-1', name: 'job-1' }], warnings: [] });
      }
      if (req.method === 'GET' && url.pathname === '/v1/workloads') {
        return json(200, [{ id: 'job-1/0', deployId: 'job-1', replica: 0, gen: 1, host: 'h1' }]);
      }
      if (req.method === 'GET' && url.pathname === '/v1/workloads/job-1%2F0/logs') {
        res.writeHead(200, { 'content-type': 'application/x-ndjson', connection: 'close' });
        // A follow: the container has not started yet, the stream ends at once and empty.
        if (url.searchParams.get('follow') === '1') return res.end();
        return res.end(`${JSON.stringify({ stream: 'stdout', line: 'hello from the job', ts: 1 })}\n`);
      }
      if (req.method === 'GET' && url.pathname === '/v1/jobs/job-1/wait') {
        // The job ends a little later.
        setTimeout(() => json(200, { id: 'job-1', status: 'failed', exitCode: 3, attempts: 1 }), 300);
        return;
      }
      json(404, { error: 'not-found', message: `${req.method} ${url.pathname}` });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    addr = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('prints the output of an attempt whose follow ended before the container ran', async () => {
    const r = await shoal([
      'run',
      '--image',
      'busybox',
      '--addr',
      addr,
      '--token',
      't',
      '--',
      'sh',
      '-c',
      'x',
    ]);
    expect(r.stderr).toMatch(/failed \(exit code 3/);
    expect(r.code).toBe(3);
    expect(r.stdout).toBe('hello from the job\n');
    // Followed first, read again once the job had ended.
    const logs = calls.filter((c) => c.includes('/logs'));
    expect(logs[0]).toContain('follow=1');
    expect(logs.at(-1)).not.toContain('follow=1');
  });
});
