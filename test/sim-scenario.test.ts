import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runScenario } from '../sim/runner.ts';
import { loadScenario, ScenarioError } from '../sim/scenario.ts';
import { parseCsv, scenarioHosts, scenarioTasks, taskSpec } from '../sim/workload.ts';
import { simCli } from './sim-cli.ts';

const TINY = 'test/fixtures/sim/tiny.yaml';

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'shoal-sim-'));
}

function write(dir: string, name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

const cli = simCli;

describe('scenario files', () => {
  it('errors name the file and the field path', () => {
    const d = tmp();
    const bad = write(
      d,
      'bad.yaml',
      'name: x\nduration_s: 10\ncluster: { hosts: [{ count: 2, cpu_milli: 1500, memory_mib: 1 }] }\nworkload: { synthetic: { count: 1, arrival: { process: poisson, rate_per_s: 1 }, shapes: [{ cpu_milli: 1, memory_mib: 1 }] } }\n',
    );
    expect(() => loadScenario(bad)).toThrow(ScenarioError);
    expect(() => loadScenario(bad)).toThrow(`${bad}: cluster.hosts[0].cpu_milli: must be whole cores`);
    const typo = write(
      d,
      'typo.yaml',
      'name: x\nduration_s: 10\ncluster: { hosts: [{ count: 1, cpu_milli: 1000, memory_mib: 1 }] }\nworkload: { synthetic: { count: 1, arrival: { process: poisson, rate_per_s: 1 }, shapes: [{ cpu_milli: 1, memory_mib: 1, gpu_mili: 5 }] } }\n',
    );
    expect(() => loadScenario(typo)).toThrow(/typo\.yaml: workload\.synthetic\.shapes\[0\]: .*gpu_mili/);
    const late = write(
      d,
      'late.yaml',
      'name: x\nduration_s: 10\ncluster: { hosts: [{ count: 1, cpu_milli: 1000, memory_mib: 1 }] }\nworkload: { synthetic: { count: 1, arrival: { process: poisson, rate_per_s: 1 }, shapes: [{ cpu_milli: 1, memory_mib: 1 }] } }\nfaults: [{ kind: loss, at_s: 11, p: 0.1, for_s: 1 }]\n',
    );
    expect(() => loadScenario(late)).toThrow(`${late}: faults[0].at_s: after duration_s (10)`);
  });

  it('CSV traces: hosts and pods, errors name file, line and column', () => {
    expect(parseCsv('a,b\n"x, ""y""",2\n# comment\n\n3,4\n', 'f').rows.map((r) => r.cells)).toEqual([
      ['x, "y"', '2'],
      ['3', '4'],
    ]);
    const d = tmp();
    write(
      d,
      'hosts.csv',
      'id,cpu_milli,memory_mib,gpu,gpu_model,labels\nh1,8000,16384,0,,rack=r1\nh2,16000,65536,2,T4,"rack=r2;zone=b"\n',
    );
    write(
      d,
      'pods.csv',
      'id,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,creation_time,deletion_time\np1,500,1024,0,,,1.5,\np2,1000,2048,1,250,T4,2,9.25\np3,1000,2048,2,1000,T4|A10,3,4\n',
    );
    const sc = write(
      d,
      's.yaml',
      'name: t\nduration_s: 30\ncluster: { hosts_csv: hosts.csv, zones: [a] }\nworkload: { trace: { pods_csv: pods.csv } }\n',
    );
    const s = loadScenario(sc);
    const hosts = scenarioHosts(s);
    expect(hosts.map((h) => [h.name, h.facts.cores, h.facts.gpus.length, h.facts.labels])).toEqual([
      ['h1', 8, 0, { rack: 'r1', zone: 'a' }],
      ['h2', 16, 2, { rack: 'r2', zone: 'b', gpu_model: 'T4' }],
    ]);
    const tasks = scenarioTasks(s, 1);
    expect(tasks.map((t) => [t.id, t.atMs, t.endMs, t.gpuMilli])).toEqual([
      ['t-p1', 1500, null, 0],
      ['t-p2', 2000, 9250, 250],
      ['t-p3', 3000, 4000, 2000],
    ]);
    expect(taskSpec(tasks[1]!).resources).toMatchObject({ gpu: { milli: 250, model: 'T4' } });
    expect(taskSpec(tasks[2]!).constraints).toEqual(['gpu_model in (T4,A10)']);
    write(d, 'pods.csv', 'id,cpu_milli,memory_mib,num_gpu,gpu_milli,creation_time\np1,500,1024,2,250,1\n');
    expect(() => scenarioTasks(loadScenario(sc), 1)).toThrow(
      /pods\.csv: line 2: gpu_milli: 250 with num_gpu 2/,
    );
    write(d, 'pods.csv', 'id,cpu_milli,memory_mib,creation_time\np1,500,lots,1\n');
    expect(() => scenarioTasks(loadScenario(sc), 1)).toThrow(/pods\.csv: line 2: memory_mib: "lots" is not/);
  });
});

describe('scenario runs', () => {
  it('scale: the shared-state stand-in on a formed cluster places the workload; its envelope is enforced by field', {
    timeout: 120_000,
  }, async () => {
    const d = tmp();
    const base =
      'name: s\nduration_s: 20\nsettle_s: 30\ncluster: { hosts: [{ count: 40, cpu_milli: 8000, memory_mib: 16384 }] }\n' +
      'network: { base_ms: 1, jitter_ms: 4, loss: 0 }\n' +
      'workload: { synthetic: { count: 30, arrival: { process: poisson, rate_per_s: 2 }, replicas: { min: 2, max: 4 }, lifetime: { dist: exponential, mean_s: 8 }, shapes: [{ cpu_milli: 1000, memory_mib: 2048 }] } }\n';
    const ok = write(
      d,
      'ok.yaml',
      `${base}faults: [{ kind: crash, at_s: 5, count: 2, permanent: true }]\nscale: { shared_state: true, formed: true, large: true }\n`,
    );
    const out = tmp();
    expect(await cli('sim', 'run', ok, '--out', out, '--no-progress')).toContain('invariants held');
    const s = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8'));
    expect(s.result).toBe('ok');
    expect(s.metrics.placed).toBeGreaterThan(40);
    const restart = write(
      d,
      'r.yaml',
      `${base}faults: [{ kind: crash, at_s: 5, count: 1 }]\nscale: { shared_state: true }\n`,
    );
    expect(() => loadScenario(restart)).toThrow(
      /r\.yaml: faults\[0\]\.permanent: the shared-state stand-in does not model restarts/,
    );
    const part = write(
      d,
      'p.yaml',
      `${base}faults: [{ kind: partition, at_s: 5, fraction: 0.3, for_s: 4 }]\nscale: { shared_state: true }\n`,
    );
    expect(() => loadScenario(part)).toThrow(/p\.yaml: faults\[0\]\.kind: partition faults are outside/);
    const lossy = write(
      d,
      'l.yaml',
      `${base.replace('loss: 0', 'loss: 0.01')}scale: { shared_state: true }\n`,
    );
    expect(() => loadScenario(lossy)).toThrow(/l\.yaml: network\.loss: must be 0/);
  });

  it('same seed → byte-identical summary.json and report.html; another seed differs', {
    timeout: 240_000,
  }, async () => {
    const a = tmp();
    const b = tmp();
    const c = tmp();
    const outA = await cli('sim', 'run', TINY, '--out', a, '--no-progress');
    expect(outA).toContain('invariants held');
    await cli('sim', 'run', TINY, '--out', b, '--no-progress');
    await cli('sim', 'run', TINY, '--out', c, '--seed', '4', '--no-progress');
    const sa = readFileSync(join(a, 'summary.json'), 'utf8');
    expect(readFileSync(join(b, 'summary.json'), 'utf8')).toBe(sa);
    expect(readFileSync(join(b, 'report.html'), 'utf8')).toBe(readFileSync(join(a, 'report.html'), 'utf8'));
    expect(readFileSync(join(c, 'summary.json'), 'utf8')).not.toBe(sa);
    const s = JSON.parse(sa);
    expect(s.result).toBe('ok');
    expect(s.metrics.placed).toBeGreaterThan(0);
    expect(s.faults.map((f: { kind: string }) => f.kind)).toEqual(
      expect.arrayContaining(['crash', 'restart', 'partition', 'heal']),
    );
    expect(s.series.t.length).toBeGreaterThan(20);
    expect(JSON.parse(readFileSync(join(a, 'wall.json'), 'utf8')).wallMs).toBeGreaterThan(0);
  });

  it('the checker stops a run at an overcommit, with the seed and a trace excerpt', {
    timeout: 120_000,
  }, async () => {
    const s = loadScenario(TINY);
    const r = await runScenario(
      { ...s, faults: [] },
      {
        afterStart: (c) => {
          // A bug stand-in: host 0's books take a replica twice its memory (as a broken adoption would).
          c.loop.after(3_000, () => {
            const a = c.get(0);
            const cap = a.sync.hostFacts();
            a.placement.adopt([
              {
                deployId: 'rogue',
                replica: 0,
                gen: 1,
                createdAt: 0,
                allocation: {
                  cpu: { sharedMilli: 500, cores: [] },
                  memoryBytes: cap.memoryBytes * 2,
                  diskBytes: 0,
                  volumes: [],
                  gpus: [],
                  limits: { cpuMilli: 500, memoryBytes: cap.memoryBytes * 2 },
                },
              },
            ]);
          });
        },
      },
    );
    const v = r.summary.violation!;
    expect(r.summary.result).toBe('violation');
    expect(v.kind).toBe('overcommit');
    expect(v.seed).toBe(3);
    expect(v.message).toMatch(/^n00000 overcommits: memory: /);
    expect(v.atMs).toBeGreaterThanOrEqual(3_000);
    expect(v.atMs).toBeLessThan(3_001);
    expect(v.excerpt.some((l) => l.includes('submit s-'))).toBe(true);
  });
});
