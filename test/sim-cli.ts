import { Command } from 'commander';
import { registerSimCommands } from '../sim/cli.ts';

/** Run `shoal sim …` in-process (the real commander program) and return what it printed. */
export async function simCli(...args: string[]): Promise<string> {
  const out: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => void out.push(a.join(' '));
  try {
    const p = new Command('shoal').exitOverride();
    registerSimCommands(p);
    await p.parseAsync(['node', 'shoal', ...args]);
  } finally {
    console.log = log;
  }
  return out.join('\n');
}
