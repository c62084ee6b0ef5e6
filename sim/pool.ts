import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { Job } from './worker.ts';

/**
 * A pool of worker threads, each running whole simulations (one core each). Workers load the
 * TypeScript sources through tsx, like the CLI does.
 */
export class SimPool {
  private readonly workers: Worker[] = [];
  private readonly idle: Worker[] = [];
  private readonly queue: { id: number; job: Job }[] = [];
  private readonly waiting = new Map<number, { resolve: (r: unknown) => void; reject: (e: Error) => void }>();
  private nextId = 0;

  constructor(size = availableParallelism()) {
    // tsx's ESM API (the `import` condition of its `./esm/api` export), found from its package.json.
    const pkg = createRequire(import.meta.url).resolve('tsx/package.json');
    const tsx = pathToFileURL(join(dirname(pkg), 'dist/esm/api/index.mjs')).href;
    const entry = new URL('./worker.ts', import.meta.url).href;
    const boot = `import(${JSON.stringify(tsx)}).then(async (m) => { m.register(); await import(${JSON.stringify(entry)}); globalThis.__simReady(); });`;
    for (let i = 0; i < Math.max(1, size); i++) {
      const w = new Worker(
        `globalThis.__simReady = () => require('node:worker_threads').parentPort.postMessage({ ready: true }); ${boot}`,
        { eval: true },
      );
      w.on('message', (msg: { ready?: true; id: number; result?: unknown; error?: string }) => {
        if (msg.ready) {
          this.idle.push(w);
          this.pump();
          return;
        }
        const p = this.waiting.get(msg.id);
        this.waiting.delete(msg.id);
        this.idle.push(w);
        if (msg.error !== undefined) p?.reject(new Error(msg.error));
        else p?.resolve(msg.result);
        this.pump();
      });
      w.on('error', (err) => {
        for (const p of this.waiting.values()) p.reject(err);
        this.waiting.clear();
      });
      this.workers.push(w);
    }
  }

  get size(): number {
    return this.workers.length;
  }

  run<R>(job: Job): Promise<R> {
    const id = this.nextId++;
    return new Promise<R>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (r: unknown) => void, reject });
      this.queue.push({ id, job });
      this.pump();
    });
  }

  private pump(): void {
    while (this.idle.length > 0 && this.queue.length > 0) this.idle.shift()!.postMessage(this.queue.shift()!);
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
