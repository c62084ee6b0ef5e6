import { describe, expect, it } from 'vitest';
import { fuzzScenario } from '../sim/fuzz.ts';
import { simCli } from './sim-cli.ts';

const cli = simCli;

describe('sim fuzz', () => {
  it('fault schedules are a function of the seed, with crashes, partitions, loss, delay or skew', () => {
    expect(JSON.stringify(fuzzScenario(11))).toBe(JSON.stringify(fuzzScenario(11)));
    expect(JSON.stringify(fuzzScenario(11))).not.toBe(JSON.stringify(fuzzScenario(12)));
    const kinds = new Set(
      Array.from({ length: 40 }, (_, i) => fuzzScenario(i + 1).faults.map((f) => f.kind)).flat(),
    );
    expect([...kinds].sort()).toEqual(['crash', 'delay', 'loss', 'partition', 'skew']);
  });

  it('a handful of seeds, in process and on worker threads: zero violations', {
    timeout: 300_000,
  }, async () => {
    const inProc = await cli('sim', 'fuzz', '--seeds', '3', '--from', '1', '--workers', '1', '--verbose');
    expect(inProc).toMatch(/fuzz: 3 seeds \(1…3\), 0 failed/);
    expect(inProc.match(/^seed \d+: ok/gm)?.length).toBe(3);
    const pooled = await cli('sim', 'fuzz', '--seeds', '2', '--from', '4', '--workers', '2', '--no-progress');
    expect(pooled).toMatch(/fuzz: 2 seeds \(4…5\), 0 failed, [\d.]+ s wall on 2 worker\(s\)/);
  });
});
