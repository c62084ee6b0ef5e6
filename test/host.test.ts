import os from 'node:os';
import { describe, expect, it } from 'vitest';
import {
  checkLabelMap,
  detectHost,
  formatAge,
  formatBytes,
  HostConfigError,
  parseBytes,
  parseCpu,
  parseGpus,
  parseLabels,
  parseOverrides,
} from '../node/host.ts';

/** The HostConfigError `fn` throws (fails the test if it throws anything else or nothing). */
function configError(fn: () => unknown): HostConfigError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(HostConfigError);
    return err as HostConfigError;
  }
  throw new Error('expected a HostConfigError');
}

describe('parseBytes', () => {
  it.each([
    ['0', 0],
    ['1073741824', 2 ** 30],
    ['512B', 512],
    ['1k', 1000],
    ['1KiB', 1024],
    ['2M', 2e6],
    ['512MiB', 512 * 2 ** 20],
    ['2G', 2e9],
    ['2gb', 2e9],
    ['8GiB', 8 * 2 ** 30],
    ['8gi', 8 * 2 ** 30],
    [' 1.5 GiB ', 1.5 * 2 ** 30],
    ['1T', 1e12],
    ['1TiB', 2 ** 40],
  ])('%j → %d', (input, bytes) => {
    expect(parseBytes(input)).toBe(bytes);
  });

  it('rounds fractional bytes down', () => {
    expect(parseBytes('1.5')).toBe(1);
    expect(parseBytes('0.5KiB')).toBe(512);
  });

  it.each(['', 'lots', '8 potatoes', '-1GiB', '1,5GiB', 'GiB', '8GiBs', '1e3'])(
    'rejects %j naming the field',
    (input) => {
      const err = configError(() => parseBytes(input, '--memory'));
      expect(err.field).toBe('--memory');
      expect(err.message).toMatch(/^--memory: cannot read ".*" as a size \(examples: /);
    },
  );

  it('rejects sizes beyond safe integers', () => {
    expect(configError(() => parseBytes('99999999TiB', 'disk')).message).toMatch(/^disk: .* too large/);
  });
});

describe('formatBytes', () => {
  it.each([
    [0, '0 B'],
    [1023, '1023 B'],
    [1024, '1.0 KiB'],
    [1536, '1.5 KiB'],
    [10 * 2 ** 20, '10 MiB'],
    [8 * 2 ** 30, '8.0 GiB'],
    [2 ** 40, '1.0 TiB'],
    [2 ** 50, '1024 TiB'],
  ])('%d → %j', (n, s) => {
    expect(formatBytes(n)).toBe(s);
  });

  it('round-trips through parseBytes for whole units', () => {
    expect(parseBytes(formatBytes(16 * 2 ** 30).replace(' ', ''))).toBe(16 * 2 ** 30);
  });
});

describe('formatAge', () => {
  it.each([
    [-5, '0s'],
    [0, '0s'],
    [12_345, '12s'],
    [119_999, '119s'],
    [120_000, '2m'],
    [3_600_000, '60m'],
    [7_200_000, '2h'],
    [47 * 3_600_000, '47h'],
    [3 * 86_400_000, '3d'],
  ])('%d ms → %j', (ms, s) => {
    expect(formatAge(ms)).toBe(s);
  });
});

describe('parseGpus', () => {
  it('reads none / empty / 0 as no GPUs', () => {
    expect(parseGpus('none')).toEqual([]);
    expect(parseGpus(' ')).toEqual([]);
    expect(parseGpus('0')).toEqual([]);
  });

  it('expands counts and indexes devices in order', () => {
    expect(parseGpus('2xA100:80GiB,T4:16GiB')).toEqual([
      { index: 0, model: 'A100', memoryBytes: 80 * 2 ** 30 },
      { index: 1, model: 'A100', memoryBytes: 80 * 2 ** 30 },
      { index: 2, model: 'T4', memoryBytes: 16 * 2 ** 30 },
    ]);
  });

  it('accepts a model without memory', () => {
    expect(parseGpus('H100')).toEqual([{ index: 0, model: 'H100', memoryBytes: 0 }]);
  });

  it.each([
    ['A100:', /^--gpu: cannot read "A100:"/],
    ['A100:80 potatoes', /^--gpu: cannot read/],
    ['A100:80XB', /^--gpu: cannot read "80XB" as a size/],
    ['0xA100', /^--gpu: "0xA100": count must be 1\.\.64/],
    ['65xT4', /^--gpu: "65xT4": count must be 1\.\.64/],
    ['A100,,T4', /^--gpu: cannot read ""/],
    ['bad model!', /^--gpu: cannot read "bad model!"/],
  ])('rejects %j naming the field', (spec, message) => {
    const err = configError(() => parseGpus(spec));
    expect(err.field).toBe('--gpu');
    expect(err.message).toMatch(message);
  });
});

describe('parseLabels / checkLabelMap', () => {
  it('reads k=v pairs; later pairs win; values may contain = and be empty', () => {
    expect(parseLabels(['zone=a', 'rack=r1', 'zone=b', 'expr=x=y', 'empty='])).toEqual({
      zone: 'b',
      rack: 'r1',
      expr: 'x=y',
      empty: '',
    });
    expect(parseLabels(['shoal.io/tier=gold'])).toEqual({ 'shoal.io/tier': 'gold' });
    expect(parseLabels([])).toEqual({});
  });

  it.each([
    ['zone', /^--label: "zone" is not k=v/],
    ['=a', /^--label: "=a" is not k=v/],
    ['-zone=a', /^--label: "-zone" is not a label key/],
    ['bad key=a', /^--label: "bad key" is not a label key/],
    [`${'k'.repeat(64)}=a`, /is not a label key .*max 63/],
    [`zone=${'v'.repeat(257)}`, /^--label: value of "zone" is longer than 256 characters/],
  ])('rejects %j naming the field', (pair, message) => {
    const err = configError(() => parseLabels([pair]));
    expect(err.field).toBe('--label');
    expect(err.message).toMatch(message);
  });

  it('checks API label maps key by key, naming labels.<key>', () => {
    expect(checkLabelMap({ zone: 'a' })).toEqual({ zone: 'a' });
    expect(configError(() => checkLabelMap({ 'a=b': 'c' })).field).toBe('labels.a=b');
    expect(configError(() => checkLabelMap({ ok: 'x', '': 'y' })).field).toBe('labels.');
  });
});

describe('parseCpu', () => {
  it('turns cores into millicores; bound cores are the whole part', () => {
    expect(parseCpu('4')).toEqual({ cpuMilli: 4000, cores: 4 });
    expect(parseCpu('2.5')).toEqual({ cpuMilli: 2500, cores: 2 });
    expect(parseCpu('0.25')).toEqual({ cpuMilli: 250, cores: 0 });
    expect(parseCpu(' 1.0005 ')).toEqual({ cpuMilli: 1001, cores: 1 });
  });

  it.each(['abc', '', '0', '-2', '4097', '1e3', '0x10', 'Infinity', '2 cores', '0.0001'])(
    'rejects %j naming the field',
    (input) => {
      expect(configError(() => parseCpu(input, '--cpu')).message).toMatch(/^--cpu: /);
    },
  );
});

describe('detectHost', () => {
  const dir = os.tmpdir();

  it('detects this machine without overrides', () => {
    const h = detectHost(dir, { gpu: 'none' });
    expect(h.cores).toBe(os.availableParallelism());
    expect(h.cpuMilli).toBe(h.cores * 1000);
    expect(h.memoryBytes).toBe(os.totalmem());
    expect(h.diskBytes).toBeGreaterThan(0);
    expect(h.gpus).toEqual([]);
    expect(h.labels).toEqual({});
  });

  it('applies overrides: fractional CPU → millicores, sizes, GPUs, labels', () => {
    const h = detectHost(dir, {
      cpu: '2.5',
      memory: '8GiB',
      disk: '100G',
      gpu: '2xT4:16GiB',
      labels: ['zone=a', 'disk=ssd'],
    });
    expect(h).toEqual({
      hostname: expect.any(String),
      cores: 2,
      cpuMilli: 2500,
      memoryBytes: 8 * 2 ** 30,
      diskBytes: 100e9,
      gpus: [
        { index: 0, model: 'T4', memoryBytes: 16 * 2 ** 30 },
        { index: 1, model: 'T4', memoryBytes: 16 * 2 ** 30 },
      ],
      labels: { zone: 'a', disk: 'ssd' },
    });
  });

  it.each([
    [{ cpu: 'abc' }, '--cpu'],
    [{ cpu: '0' }, '--cpu'],
    [{ memory: '8 potatoes' }, '--memory'],
    [{ disk: 'big' }, '--disk'],
    [{ gpu: '0xA100' }, '--gpu'],
    [{ labels: ['nope'] }, '--label'],
  ])('rejects %j with a HostConfigError naming %s', (overrides, field) => {
    const err = configError(() => detectHost(dir, overrides));
    expect(err.field).toBe(field);
    expect(err.message.startsWith(`${field}: `)).toBe(true);
    // The CLI validates with parseOverrides before starting anything: same error.
    expect(configError(() => parseOverrides(overrides)).message).toBe(err.message);
  });

  it('reports 0 disk for a directory that does not exist', () => {
    expect(detectHost('/nonexistent/shoal/dir', { gpu: 'none' }).diskBytes).toBe(0);
  });
});
