import { type DestinationStream, type LevelWithSilent, pino } from 'pino';
import pretty from 'pino-pretty';
import type { Logger } from '../core/io.ts';

export interface LoggerOptions {
  /** Minimum level. Default 'info'. */
  level?: LevelWithSilent;
  /** Human-readable output. Default: when stdout is a TTY. */
  pretty?: boolean;
  /** Where to write (tests). Default stdout. */
  destination?: DestinationStream;
  /** Bindings on every line (e.g. { node: id }). */
  base?: Record<string, unknown>;
}

const LEVELS: readonly string[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/**
 * A pino logger (JSON lines; pino-pretty in-process, no worker thread, when `pretty`) that
 * satisfies the core's Logger interface.
 *
 * JSON lines go to stdout asynchronously (sonic-boom, `sync: false`): lines logged while a write
 * is in flight are written together, instead of one blocking write(2) per line — a busy agent
 * at debug level logs several lines per placement decision. pino flushes what is buffered when
 * the process exits (also after an uncaught exception); only a SIGKILL can lose the last lines.
 */
export function createLogger(opts: LoggerOptions = {}): Logger {
  const level = opts.level ?? 'info';
  if (!LEVELS.includes(level))
    throw new Error(`invalid log level ${JSON.stringify(level)}: expected one of ${LEVELS.join(', ')}`);
  const usePretty = opts.pretty ?? process.stdout.isTTY === true;
  const dest: DestinationStream =
    opts.destination ??
    (usePretty
      ? pretty({ colorize: process.stdout.isTTY === true, translateTime: 'SYS:HH:MM:ss.l' })
      : pino.destination({ dest: 1, sync: false }));
  const options = { level, base: opts.base ?? null };
  const logger: Logger = pino(options, dest);
  return logger;
}
