/**
 * One conformance suite for every Engine (docker, process, sim). Each implementation provides a
 * harness that turns an abstract `Program` (what the workload prints, how long it runs, its exit
 * code) into a spec its engine understands, and a notion of time (real or virtual).
 */
import { afterAll, describe, expect, it } from 'vitest';
import {
  type Engine,
  type EngineErrorCode,
  type EngineEvent,
  isEngineError,
  type LogLine,
  type WorkloadSpec,
} from '../../engines/engine.ts';

/** An abstract workload behaviour. */
export interface Program {
  /** Printed at start. */
  stdout?: string[];
  stderr?: string[];
  /** Run this long (ms), then print the `*AtExit` lines and exit with `exitCode`. Absent = until stopped. */
  runMs?: number;
  stdoutAtExit?: string[];
  stderrAtExit?: string[];
  exitCode?: number;
  /** Ignore SIGTERM (stop must escalate to SIGKILL). */
  ignoreTerm?: boolean;
}

export interface EngineHarness {
  /** A (new) engine object for `hostId`; calling it again for the same host yields another view of
   * the same backing engine (another agent incarnation). */
  make(hostId: string): Promise<Engine>;
  /** The spec fields that make the engine run `p`. */
  program(p: Program): Pick<WorkloadSpec, 'image' | 'command' | 'args'>;
  /** A command for `exec` behaving as `p` (which must not set runMs/ignoreTerm). */
  execCommand(p: Program): string[];
  /** An image the engine does not have (omit for engines without images). */
  missingImage?: string;
  /** Spec fields naming a command that does not exist. */
  missingCommand: Pick<WorkloadSpec, 'image' | 'command' | 'args'>;
  /** Wait `ms` of the engine's time (real or virtual). */
  sleep(ms: number): Promise<void>;
  /** The engine's clock, in ms. */
  now(): number;
  /** Slack allowed on timing assertions (ms). */
  slackMs: number;
  cleanup?(): Promise<void>;
}

/** Shell (busybox or dash) rendering of a Program, shared by the docker and process harnesses. */
export function shellScript(p: Program): string {
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const lines: string[] = [];
  if (p.ignoreTerm) lines.push(`trap '' TERM`);
  for (const l of p.stdout ?? []) lines.push(`echo ${q(l)}`);
  for (const l of p.stderr ?? []) lines.push(`echo ${q(l)} >&2`);
  if (p.runMs === undefined) {
    lines.push(p.ignoreTerm ? 'while :; do sleep 1; done' : 'exec sleep 3600');
  } else {
    if (p.runMs > 0) lines.push(`sleep ${(p.runMs / 1000).toFixed(3)}`);
    for (const l of p.stdoutAtExit ?? []) lines.push(`echo ${q(l)}`);
    for (const l of p.stderrAtExit ?? []) lines.push(`echo ${q(l)} >&2`);
    lines.push(`exit ${p.exitCode ?? 0}`);
  }
  return lines.join('\n');
}

async function collect(it: AsyncIterable<LogLine>): Promise<LogLine[]> {
  const out: LogLine[] = [];
  for await (const l of it) out.push(l);
  return out;
}

async function expectCode(p: Promise<unknown>, code: EngineErrorCode): Promise<void> {
  let caught: unknown;
  try {
    await p;
  } catch (err) {
    caught = err;
  }
  expect(caught, `expected EngineError ${code}`).toBeDefined();
  if (!isEngineError(caught, code)) throw caught;
}

export function engineConformance(
  name: string,
  makeHarness: () => Promise<EngineHarness> | EngineHarness,
): void {
  describe(`engine conformance: ${name}`, () => {
    const hostId = `h${process.pid}-${Date.now().toString(36)}`;
    let h: EngineHarness | undefined;
    let engine: Engine | undefined;
    const engines: Engine[] = [];
    let seq = 0;

    async function setup(): Promise<{ h: EngineHarness; e: Engine }> {
      if (!h) h = await makeHarness();
      if (!engine) {
        engine = await h.make(hostId);
        engines.push(engine);
      }
      return { h, e: engine };
    }

    function spec(p: Program, extra: Partial<WorkloadSpec> = {}): WorkloadSpec {
      seq++;
      return {
        id: `w${seq}`,
        deployId: `d${seq}`,
        hostId,
        ...h!.program(p),
        ...extra,
      };
    }

    afterAll(async () => {
      if (engine) {
        for (const w of await engine.list()) await engine.remove(w.id, { force: true }).catch(() => {});
      }
      for (const e of engines) await e.close();
      await h?.cleanup?.();
    });

    it('create → inspect → list (labels, owner filter) → start', async () => {
      const { h, e } = await setup();
      const s = spec({}, { labels: { team: 'blue' } });
      const created = await e.create(s);
      expect(created.state).toBe('created');
      expect(created.id).toBe(s.id);
      expect(created.labels).toMatchObject({
        team: 'blue',
        'shoal.workload': s.id,
        'shoal.deploy': s.deployId,
        'shoal.host': hostId,
      });
      const listed = (await e.list()).find((w) => w.id === s.id);
      expect(listed?.labels['shoal.host']).toBe(hostId);
      expect(listed?.deployId).toBe(s.deployId);

      const other = await h.make(`${hostId}-other`);
      engines.push(other);
      expect((await other.list()).some((w) => w.id === s.id)).toBe(false);
      await expectCode(other.inspect(s.id), 'not-found');

      await e.start(s.id);
      await e.start(s.id); // idempotent
      const running = await e.inspect(s.id);
      expect(running.state).toBe('running');
      expect(running.startedAt).toBeGreaterThan(0);
      await e.remove(s.id, { force: true });
    });

    it('logs: history with stdout/stderr apart, tail', async () => {
      const { e } = await setup();
      const s = spec({ stdout: ['o1', 'o2', 'o3'], stderr: ['e1'], runMs: 0, exitCode: 0 });
      await e.create(s);
      await e.start(s.id);
      expect(await e.wait(s.id)).toBe(0);
      const all = await collect(e.logs(s.id));
      expect(all.filter((l) => l.stream === 'stdout').map((l) => l.line)).toEqual(['o1', 'o2', 'o3']);
      expect(all.filter((l) => l.stream === 'stderr').map((l) => l.line)).toEqual(['e1']);
      for (const l of all) expect(l.ts).toBeGreaterThan(0);

      const t = spec({ stdout: ['a', 'b', 'c'], runMs: 0 });
      await e.create(t);
      await e.start(t.id);
      await e.wait(t.id);
      expect((await collect(e.logs(t.id, { tail: 2 }))).map((l) => l.line)).toEqual(['b', 'c']);
      expect(await collect(e.logs(t.id, { since: h!.now() + 3_600_000 }))).toEqual([]);
    });

    it('logs follow: streams new lines until the workload exits', async () => {
      const { e } = await setup();
      const s = spec({
        stdout: ['first'],
        runMs: 600,
        stdoutAtExit: ['last'],
        stderrAtExit: ['bye'],
        exitCode: 0,
      });
      await e.create(s);
      await e.start(s.id);
      const lines = await collect(e.logs(s.id, { follow: true }));
      expect(lines.filter((l) => l.stream === 'stdout').map((l) => l.line)).toEqual(['first', 'last']);
      expect(lines.filter((l) => l.stream === 'stderr').map((l) => l.line)).toEqual(['bye']);
    });

    it('logs follow can be aborted', async () => {
      const { h, e } = await setup();
      const s = spec({ stdout: ['x'] });
      await e.create(s);
      await e.start(s.id);
      const ac = new AbortController();
      const got: string[] = [];
      const done = (async () => {
        for await (const l of e.logs(s.id, { follow: true, signal: ac.signal })) got.push(l.line);
      })();
      await h.sleep(300);
      ac.abort();
      await done;
      expect(got).toEqual(['x']);
      await e.remove(s.id, { force: true });
    });

    it('wait returns the exit code; exited state is inspectable', async () => {
      const { e } = await setup();
      const s = spec({ runMs: 50, exitCode: 3 });
      await e.create(s);
      const waiting = e.wait(s.id); // before start: waits for the run
      await e.start(s.id);
      expect(await waiting).toBe(3);
      const info = await e.inspect(s.id);
      expect(info.state).toBe('exited');
      expect(info.exitCode).toBe(3);
      expect(info.finishedAt).toBeGreaterThan(0);
      expect(await e.wait(s.id)).toBe(3); // already exited
      await expectCode(e.start(s.id), 'conflict');
    });

    it('stop is graceful within the timeout (SIGTERM → 143)', async () => {
      const { h, e } = await setup();
      const s = spec({});
      await e.create(s);
      await e.start(s.id);
      const t0 = h.now();
      await e.stop(s.id, { timeoutMs: 5_000 });
      expect(h.now() - t0).toBeLessThan(2_000 + h.slackMs);
      const info = await e.inspect(s.id);
      expect(info.state).toBe('exited');
      expect(info.exitCode).toBe(143);
      await e.stop(s.id, { timeoutMs: 1_000 }); // stopping an exited workload is fine
    });

    it('stop escalates to SIGKILL after the timeout (→ 137)', async () => {
      const { h, e } = await setup();
      const s = spec({ ignoreTerm: true });
      await e.create(s);
      await e.start(s.id);
      await h.sleep(200); // let the trap be installed
      const t0 = h.now();
      await e.stop(s.id, { timeoutMs: 500 });
      const took = h.now() - t0;
      expect(took).toBeGreaterThanOrEqual(450);
      expect(took).toBeLessThan(500 + 2_000 + h.slackMs);
      expect((await e.inspect(s.id)).exitCode).toBe(137);
    });

    it('stop of a created (never started) workload is a no-op', async () => {
      const { e } = await setup();
      const s = spec({});
      await e.create(s);
      await e.stop(s.id, { timeoutMs: 100 });
      expect((await e.inspect(s.id)).state).toBe('created');
    });

    it('remove: conflict while running unless forced; then gone', async () => {
      const { e } = await setup();
      const s = spec({});
      await e.create(s);
      await e.start(s.id);
      await expectCode(e.remove(s.id), 'conflict');
      await e.remove(s.id, { force: true });
      await expectCode(e.inspect(s.id), 'not-found');
      expect((await e.list()).some((w) => w.id === s.id)).toBe(false);

      const x = spec({ runMs: 0 });
      await e.create(x);
      await e.start(x.id);
      await e.wait(x.id);
      await e.remove(x.id); // exited: no force needed
      await expectCode(e.inspect(x.id), 'not-found');
    });

    it('create: conflict on a duplicate id, invalid-spec on a foreign host id', async () => {
      const { e } = await setup();
      const s = spec({});
      await e.create(s);
      await expectCode(e.create(s), 'conflict');
      await expectCode(e.create({ ...spec({}), hostId: 'someone-else' }), 'invalid-spec');
      await e.remove(s.id, { force: true });
    });

    it('ports: published ports are recorded and reported; malformed ones are invalid-spec', async () => {
      const { e } = await setup();
      const ports = [
        { port: 18_081, protocol: 'tcp' as const },
        { port: 18_081, protocol: 'udp' as const },
      ];
      const s = spec({}, { ports });
      expect((await e.create(s)).spec.ports).toEqual(ports);
      expect((await e.list()).find((w) => w.id === s.id)?.spec.ports).toEqual(ports);
      await e.remove(s.id, { force: true });
      const plain = spec({});
      expect((await e.create(plain)).spec.ports).toBeUndefined();
      await e.remove(plain.id, { force: true });
      await expectCode(e.create(spec({}, { ports: [{ port: 0, protocol: 'tcp' }] })), 'invalid-spec');
      await expectCode(e.create(spec({}, { ports: [ports[0]!, ports[0]!] })), 'invalid-spec');
    });

    it('resources: recorded at create, changed live by update', async () => {
      const { e } = await setup();
      const s = spec({}, { resources: { cpuMilli: 500, memoryBytes: 64 * 1024 * 1024 } });
      const c = await e.create(s);
      expect(c.spec.resources).toMatchObject({ cpuMilli: 500, memoryBytes: 64 * 1024 * 1024 });
      await e.start(s.id);
      const u = await e.update(s.id, { memoryBytes: 128 * 1024 * 1024, cpuMilli: 1000 });
      expect(u.spec.resources).toMatchObject({ cpuMilli: 1000, memoryBytes: 128 * 1024 * 1024 });
      const again = await e.inspect(s.id);
      expect(again.spec.resources).toMatchObject({ cpuMilli: 1000, memoryBytes: 128 * 1024 * 1024 });
      expect(typeof again.enforced.memory).toBe('boolean');
      const listed = (await e.list()).find((w) => w.id === s.id);
      expect(listed?.spec.resources?.memoryBytes).toBe(128 * 1024 * 1024);
      const st = await e.stats(s.id);
      expect(st.cpuMilli).toBeGreaterThanOrEqual(0);
      expect(st.memoryBytes).toBeGreaterThanOrEqual(0);
      await e.remove(s.id, { force: true });
    });

    it('exec: exit code and stdout/stderr; not-running once exited', async () => {
      const { h, e } = await setup();
      const s = spec({}, { env: { SHOAL_TEST_VAR: 'v1' } });
      await e.create(s);
      await e.start(s.id);
      const r = await e.exec(
        s.id,
        h.execCommand({ stdout: ['hi'], stderr: ['oops'], runMs: 0, exitCode: 4 }),
      );
      expect(r.exitCode).toBe(4);
      expect(r.stdout).toBe('hi\n');
      expect(r.stderr).toBe('oops\n');
      await e.stop(s.id, { timeoutMs: 2_000 });
      await expectCode(e.exec(s.id, h.execCommand({ runMs: 0 })), 'not-running');
      await e.remove(s.id);
    });

    it('events: started, then exited with the code', async () => {
      const { e } = await setup();
      const events: EngineEvent[] = [];
      const unsubscribe = e.subscribe((ev) => events.push(ev));
      try {
        const s = spec({ runMs: 100, exitCode: 5 });
        await e.create(s);
        await e.start(s.id);
        expect(await e.wait(s.id)).toBe(5);
        const deadline = h!.now() + 5_000;
        while (!events.some((ev) => ev.id === s.id && ev.type === 'exited') && h!.now() < deadline)
          await h!.sleep(50);
        const mine = events.filter((ev) => ev.id === s.id);
        const started = mine.findIndex((ev) => ev.type === 'started');
        const exited = mine.findIndex((ev) => ev.type === 'exited');
        expect(started).toBeGreaterThanOrEqual(0);
        expect(exited).toBeGreaterThan(started);
        expect(mine[exited]).toMatchObject({ type: 'exited', exitCode: 5, oomKilled: false });
      } finally {
        unsubscribe();
      }
    });

    it('not-found for every call on an unknown id', async () => {
      const { h, e } = await setup();
      const id = 'no-such-workload';
      await expectCode(e.inspect(id), 'not-found');
      await expectCode(e.start(id), 'not-found');
      await expectCode(e.stop(id), 'not-found');
      await expectCode(e.remove(id, { force: true }), 'not-found');
      await expectCode(e.wait(id), 'not-found');
      await expectCode(e.stats(id), 'not-found');
      await expectCode(e.update(id, { cpuMilli: 100 }), 'not-found');
      await expectCode(e.exec(id, h.execCommand({ runMs: 0 })), 'not-found');
      await expectCode(collect(e.logs(id)), 'not-found');
    });

    it('unknown image / unknown command fail with typed errors, never hang', async () => {
      const { h, e } = await setup();
      if (h.missingImage !== undefined) {
        const s = spec({}, { image: h.missingImage });
        const t0 = Date.now();
        await expectCode(e.create(s), 'image-not-found');
        expect(Date.now() - t0).toBeLessThan(5_000);
        try {
          await e.create(s);
        } catch (err) {
          expect(String((err as Error).message)).toMatch(/shoal never pulls/);
        }
      }
      const c = spec({}, h.missingCommand);
      await expectCode(
        (async () => {
          await e.create(c);
          await e.start(c.id);
        })(),
        'command-not-found',
      );
    });
  });
}
