import type { Connection, Stream, StreamMessageEvent } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import type { Libp2p } from 'libp2p';
import { FRAME_HEADER_BYTES, FrameDecoder, FrameTooLargeError, frameHeader } from './frame.ts';
import type { TransportLogger } from './libp2p.ts';
import type { PeerId } from './transport.ts';

/**
 * Request → streamed response over libp2p (`/shoal/fwd/1.0.0` by default): the building block of
 * agent-to-agent forwarding (logs -f, exec, node-local operations asked of another agent).
 *
 * One libp2p stream per request, on the already-authenticated connection (noise peer ids, and
 * the pnet cluster key when there is one). Wire format, every unit a length-prefixed frame
 * (gossip/frame.ts):
 *
 *   caller → server:  [request bytes]            then the caller half-closes its write side
 *   server → caller:  [0x01 message]*  ( [0x02] end  |  [0x03 code '\n' reason] error )
 *
 * The first message is the response "head" (`request()` resolves with it); the rest are read as
 * an async iterable. A response that ends without an end/error frame is `truncated` — a caller
 * can always tell a complete answer from a cut one.
 *
 * Flow control is libp2p's: the caller pauses the stream when it holds `highWaterBytes` of
 * unread messages (yamux then stops granting window, so the server's `send` returns false and
 * the server waits for `drain` before asking its handler for more). Cancellation both ways:
 * the caller aborting (or breaking out of its loop) resets the stream, which aborts the signal
 * handed to the server's handler; the server going away ends the caller's iteration with an error.
 */

export const FWD_PROTOCOL = '/shoal/fwd/1.0.0';

export type StreamErrorCode =
  /** Could not dial the peer or open the protocol (down, unknown address, not speaking it). */
  | 'unreachable'
  /** No response head within the time budget (dial included). */
  | 'timeout'
  /** The server refused the caller (e.g. not a cluster member). */
  | 'refused'
  /** A request or message above the configured bound. */
  | 'too-large'
  /** The server's handler failed; the message is the handler's. */
  | 'remote'
  /** The response stream ended or broke before its end frame. */
  | 'truncated'
  /** The caller cancelled. */
  | 'aborted'
  /** This side was stopped. */
  | 'stopped';

export class StreamError extends Error {
  constructor(
    readonly code: StreamErrorCode,
    readonly peer: PeerId,
    message: string,
  ) {
    super(message);
    this.name = 'StreamError';
  }
}

/**
 * Serves one request: yields the response messages (the first is the head). `signal` aborts when
 * the caller goes away or the protocol stops; the handler must then stop producing.
 */
export type StreamHandler = (
  from: PeerId,
  request: Uint8Array,
  signal: AbortSignal,
) => AsyncIterable<Uint8Array>;

export interface StreamProtocolOptions {
  protocol?: string;
  /** Largest request accepted / sent. Default 1 MiB. */
  maxRequestBytes?: number;
  /** Largest single response message. Default 1 MiB. */
  maxMessageBytes?: number;
  /** Budget for dialling the peer and opening the stream. Default 5 s. */
  dialTimeoutMs?: number;
  /** Unread response bytes the caller holds before pausing the stream. Default 1 MiB. */
  highWaterBytes?: number;
  /** An inbound request must be complete within this. Default 10 s. */
  requestReadTimeoutMs?: number;
  /** Concurrent streams per connection and direction. Default 256. */
  maxStreams?: number;
  /**
   * Admission of an inbound caller: `true` to serve, or a reason (sent back as `refused`).
   * Default: refuse everyone — a server must say whom it trusts.
   */
  accept?: (peer: PeerId) => true | string;
  logger?: TransportLogger;
}

/** A response being received: its head, then the remaining messages. */
export interface StreamResponse extends AsyncIterable<Uint8Array> {
  readonly head: Uint8Array;
  /** Reset the stream (the server's handler sees its signal abort). Idempotent. */
  cancel(reason?: string): void;
}

enum Kind {
  Message = 1,
  End = 2,
  Error = 3,
}

const ERROR_CODES: readonly StreamErrorCode[] = ['refused', 'too-large', 'remote'];
const MAX_REASON_CHARS = 2_000;
/** Bytes the server lets queue in a stream (beyond the caller's yamux window) before waiting. */
const WRITE_HIGH_WATER = 256 * 1024;

const nullLogger: TransportLogger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child: () => nullLogger,
};

export class StreamProtocol {
  readonly protocol: string;
  readonly #node: Libp2p;
  readonly #maxRequest: number;
  readonly #maxMessage: number;
  readonly #dialTimeoutMs: number;
  readonly #highWater: number;
  readonly #readTimeoutMs: number;
  readonly #maxStreams: number;
  readonly #accept: (peer: PeerId) => true | string;
  readonly #log: TransportLogger;
  #handler: StreamHandler | undefined;
  #stopped = false;
  /** Everything in flight (both directions): aborted by stop(). */
  readonly #live = new Set<(reason: string) => void>();
  readonly #stats = { served: 0, refused: 0, oversize: 0, requested: 0 };

  constructor(node: Libp2p, options: StreamProtocolOptions = {}) {
    this.#node = node;
    this.protocol = options.protocol ?? FWD_PROTOCOL;
    this.#maxRequest = options.maxRequestBytes ?? 1024 * 1024;
    this.#maxMessage = options.maxMessageBytes ?? 1024 * 1024;
    this.#dialTimeoutMs = options.dialTimeoutMs ?? 5_000;
    this.#highWater = options.highWaterBytes ?? 1024 * 1024;
    this.#readTimeoutMs = options.requestReadTimeoutMs ?? 10_000;
    this.#maxStreams = options.maxStreams ?? 256;
    this.#accept = options.accept ?? (() => 'this agent accepts no forwarded requests');
    this.#log = (options.logger ?? nullLogger).child({ component: 'streams', protocol: this.protocol });
  }

  get stats(): Readonly<{ served: number; refused: number; oversize: number; requested: number }> {
    return { ...this.#stats };
  }

  /** Serve inbound requests with `handler` (once). */
  async handle(handler: StreamHandler): Promise<void> {
    if (this.#handler !== undefined) throw new Error(`${this.protocol}: already handled`);
    this.#handler = handler;
    await this.#node.handle(this.protocol, (stream, connection) => this.#onStream(stream, connection), {
      maxInboundStreams: this.#maxStreams,
      maxOutboundStreams: this.#maxStreams,
    });
  }

  /** Stop serving and abort everything in flight. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    for (const abort of [...this.#live]) abort('stopped');
    this.#live.clear();
    if (this.#handler !== undefined) await this.#node.unhandle(this.protocol).catch(() => {});
  }

  /**
   * Send `request` to `peer`; resolves once the response head arrives (within `timeoutMs`,
   * dial included), rejects with a StreamError naming the peer otherwise.
   */
  request(
    peer: PeerId,
    request: Uint8Array,
    opts: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<StreamResponse> {
    if (this.#stopped) return Promise.reject(new StreamError('stopped', peer, 'forwarding is stopped'));
    if (request.byteLength > this.#maxRequest) {
      return Promise.reject(
        new StreamError(
          'too-large',
          peer,
          `request of ${request.byteLength} bytes exceeds ${this.#maxRequest} bytes`,
        ),
      );
    }
    let remote: ReturnType<typeof peerIdFromString>;
    try {
      remote = peerIdFromString(peer);
    } catch {
      return Promise.reject(new StreamError('unreachable', peer, `"${peer}" is not a peer id`));
    }
    if (peer === this.#node.peerId.toString()) {
      return Promise.reject(new StreamError('unreachable', peer, 'cannot forward to self'));
    }
    this.#stats.requested++;
    const call = new OutboundCall(peer, this.#maxMessage, this.#highWater);
    const onStop = (reason: string) => call.fail(new StreamError('stopped', peer, `forwarding ${reason}`));
    this.#live.add(onStop);
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const timer = setTimeout(
      () => call.fail(new StreamError('timeout', peer, `no response from ${peer} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    call.head.finally(() => clearTimeout(timer)).catch(() => {});
    const onAbort = () => call.fail(new StreamError('aborted', peer, 'cancelled by the caller'));
    if (opts.signal?.aborted) onAbort();
    else opts.signal?.addEventListener('abort', onAbort, { once: true });
    call.onSettled = () => {
      this.#live.delete(onStop);
      opts.signal?.removeEventListener('abort', onAbort);
    };
    const dialSignal = AbortSignal.any([call.signal, AbortSignal.timeout(this.#dialTimeoutMs)]);
    this.#node
      .dialProtocol(remote, this.protocol, { signal: dialSignal })
      .then((stream) => call.attach(stream, request))
      .catch((err: unknown) => {
        if (call.signal.aborted) return; // already failed (timeout, cancel, stop)
        const dialTimedOut = dialSignal.aborted;
        call.fail(
          new StreamError(
            dialTimedOut ? 'timeout' : 'unreachable',
            peer,
            dialTimedOut
              ? `cannot reach ${peer}: no connection within ${this.#dialTimeoutMs} ms`
              : `cannot reach ${peer}: ${messageOf(err)}`,
          ),
        );
      });
    return call.head.then((head) => call.response(head));
  }

  // ---- server side ---------------------------------------------------------------------------

  #onStream(stream: Stream, connection: Connection): void {
    const from = connection.remotePeer.toString();
    const ctrl = new AbortController();
    const abort = (reason: string) => {
      if (!ctrl.signal.aborted) ctrl.abort(new Error(reason));
      stream.abort(new Error(reason));
    };
    if (this.#stopped) {
      abort('stopped');
      return;
    }
    this.#live.add(abort);
    stream.addEventListener('close', () => {
      this.#live.delete(abort);
      if (!ctrl.signal.aborted) ctrl.abort(new Error('caller closed the stream'));
    });
    const verdict = this.#accept(from);
    if (verdict !== true) {
      this.#stats.refused++;
      this.#log.warn({ from, reason: verdict }, 'forwarded request refused');
      void this.#finish(stream, errorFrame('refused', verdict));
      return;
    }
    const decoder = new FrameDecoder(this.#maxRequest);
    const readTimer = setTimeout(() => abort('request not received in time'), this.#readTimeoutMs);
    const onChunk = (evt: StreamMessageEvent): void => {
      let frames: Uint8Array[];
      try {
        frames = decoder.push(chunkBytes(evt));
      } catch (err) {
        clearTimeout(readTimer);
        stream.removeEventListener('message', onChunk);
        if (err instanceof FrameTooLargeError) {
          this.#stats.oversize++;
          this.#log.warn({ from, announced: err.announced }, 'oversize forwarded request refused');
          void this.#finish(stream, errorFrame('too-large', err.message));
        } else abort(messageOf(err));
        return;
      }
      const request = frames[0];
      if (request === undefined) return;
      clearTimeout(readTimer);
      stream.removeEventListener('message', onChunk);
      void this.#serve(stream, from, request, ctrl.signal);
    };
    stream.addEventListener('message', onChunk);
    stream.addEventListener('close', () => clearTimeout(readTimer));
  }

  async #serve(stream: Stream, from: PeerId, request: Uint8Array, signal: AbortSignal): Promise<void> {
    // Leave libp2p's event dispatch before running user code.
    await new Promise<void>((resolve) => setImmediate(resolve));
    const handler = this.#handler;
    if (handler === undefined || signal.aborted) return;
    this.#stats.served++;
    let trailer: Uint8Array = new Uint8Array([Kind.End]);
    try {
      for await (const msg of handler(from, request, signal)) {
        if (signal.aborted) break;
        if (msg.byteLength > this.#maxMessage) {
          trailer = errorFrame(
            'too-large',
            `response message of ${msg.byteLength} bytes exceeds ${this.#maxMessage}`,
          );
          break;
        }
        const head = new Uint8Array(FRAME_HEADER_BYTES + 1);
        head.set(frameHeader(1 + msg.byteLength));
        head[FRAME_HEADER_BYTES] = Kind.Message;
        stream.send(head);
        stream.send(msg);
        // Backpressure: hold the handler while the caller's window is shut. `send` returning
        // false is not enough — yamux emits 'drain' on any window update, however small — so
        // wait on what is actually still queued.
        while (stream.writeBufferLength > WRITE_HIGH_WATER && !signal.aborted) {
          if (stream.writableNeedsDrain) await nextDrain(stream, signal);
          else await new Promise<void>((resolve) => setImmediate(resolve));
        }
      }
    } catch (err) {
      if (signal.aborted) return; // the caller left; nothing to tell it
      trailer = errorFrame('remote', messageOf(err));
    }
    if (signal.aborted) return;
    await this.#finish(stream, trailer);
  }

  /** Send the last frame and close our side (the caller closes its own). */
  async #finish(stream: Stream, body: Uint8Array): Promise<void> {
    try {
      if (stream.writeStatus !== 'writable') return;
      stream.send(frameHeader(body.byteLength));
      stream.send(body);
      await stream.close();
    } catch (err) {
      stream.abort(err instanceof Error ? err : new Error(messageOf(err)));
    }
  }
}

/** The caller's side of one request. */
class OutboundCall {
  readonly #peer: PeerId;
  readonly #decoder: FrameDecoder;
  readonly #highWater: number;
  readonly #ctrl = new AbortController();
  #stream: Stream | undefined;
  #resolveHead!: (head: Uint8Array) => void;
  #rejectHead!: (err: unknown) => void;
  #gotHead = false;
  readonly head: Promise<Uint8Array>;
  /** Messages after the head, not yet read. */
  readonly #queue: Uint8Array[] = [];
  #queuedBytes = 0;
  /** Set once the response is complete (null) or failed (the error). */
  #done: StreamError | null | undefined;
  #wake: (() => void) | undefined;
  onSettled: () => void = () => {};

  constructor(peer: PeerId, maxMessage: number, highWater: number) {
    this.#peer = peer;
    this.#decoder = new FrameDecoder(maxMessage + 1);
    this.#highWater = highWater;
    this.head = new Promise<Uint8Array>((resolve, reject) => {
      this.#resolveHead = resolve;
      this.#rejectHead = reject;
    });
  }

  get signal(): AbortSignal {
    return this.#ctrl.signal;
  }

  attach(stream: Stream, request: Uint8Array): void {
    if (this.#done !== undefined) {
      stream.abort(new Error('cancelled'));
      return;
    }
    this.#stream = stream;
    // We pause ourselves at highWater; room above it for what is already in flight.
    stream.maxReadBufferLength = this.#highWater + 16 * 1024 * 1024;
    stream.addEventListener('message', (evt) => this.#onChunk(chunkBytes(evt)));
    stream.addEventListener('close', (evt) => {
      if (this.#done !== undefined) return;
      const why = evt.error === undefined ? 'the stream closed' : messageOf(evt.error);
      this.fail(new StreamError('truncated', this.#peer, `response from ${this.#peer} cut short: ${why}`));
    });
    try {
      stream.send(frameHeader(request.byteLength));
      stream.send(request);
      stream.close().catch(() => {}); // half-close: we keep reading
    } catch (err) {
      this.fail(
        new StreamError('unreachable', this.#peer, `cannot send to ${this.#peer}: ${messageOf(err)}`),
      );
    }
  }

  fail(err: StreamError): void {
    if (this.#done !== undefined) return;
    this.#done = err;
    if (err.code === 'aborted' || err.code === 'stopped') {
      // Our own cancel: what arrived but was not read is dropped. (On a remote failure the
      // messages received before it are still delivered, then the error.)
      this.#queue.length = 0;
      this.#queuedBytes = 0;
    }
    this.#ctrl.abort(err);
    this.#stream?.abort(err);
    this.#rejectHead(err);
    this.#wake?.();
    this.onSettled();
  }

  #onChunk(chunk: Uint8Array): void {
    if (this.#done !== undefined) return;
    let frames: Uint8Array[];
    try {
      frames = this.#decoder.push(chunk);
    } catch (err) {
      this.fail(
        new StreamError(
          'too-large',
          this.#peer,
          err instanceof FrameTooLargeError
            ? `${this.#peer} sent a message of ${err.announced} bytes (limit ${err.limit - 1})`
            : messageOf(err),
        ),
      );
      return;
    }
    for (const frame of frames) {
      const kind = frame[0];
      if (kind === Kind.Message) {
        const msg = frame.subarray(1);
        if (!this.#gotHead) {
          this.#gotHead = true;
          this.#resolveHead(msg);
        } else {
          this.#queue.push(msg);
          this.#queuedBytes += msg.byteLength;
        }
      } else if (kind === Kind.End) {
        this.#done = null;
        if (!this.#gotHead) {
          this.#rejectHead(new StreamError('remote', this.#peer, `${this.#peer} answered nothing`));
        }
        this.onSettled();
        break;
      } else if (kind === Kind.Error) {
        const text = new TextDecoder().decode(frame.subarray(1));
        const nl = text.indexOf('\n');
        const code = text.slice(0, nl) as StreamErrorCode;
        const reason = text.slice(nl + 1);
        this.fail(
          new StreamError(
            ERROR_CODES.includes(code) ? code : 'remote',
            this.#peer,
            `${this.#peer}: ${reason}`,
          ),
        );
        return;
      } else {
        this.fail(new StreamError('remote', this.#peer, `malformed response frame from ${this.#peer}`));
        return;
      }
    }
    if (this.#queuedBytes >= this.#highWater && this.#stream?.readStatus === 'readable') this.#stream.pause();
    this.#wake?.();
  }

  response(head: Uint8Array): StreamResponse {
    return {
      head,
      cancel: (reason = 'cancelled by the caller') =>
        this.fail(new StreamError('aborted', this.#peer, reason)),
      [Symbol.asyncIterator]: () => ({
        next: () => this.#next(),
        return: async () => {
          if (this.#done === undefined) this.fail(new StreamError('aborted', this.#peer, 'reader stopped'));
          return { done: true, value: undefined };
        },
      }),
    };
  }

  async #next(): Promise<IteratorResult<Uint8Array>> {
    for (;;) {
      const msg = this.#queue.shift();
      if (msg !== undefined) {
        this.#queuedBytes -= msg.byteLength;
        if (this.#queuedBytes < this.#highWater / 2 && this.#stream?.readStatus === 'paused') {
          this.#stream.resume();
        }
        return { done: false, value: msg };
      }
      if (this.#done === null) return { done: true, value: undefined };
      if (this.#done !== undefined) {
        if (this.#done.code === 'aborted') return { done: true, value: undefined };
        throw this.#done;
      }
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
      this.#wake = undefined;
    }
  }
}

/**
 * The next 'drain' (or close/abort) of `stream`. Not `stream.onDrain()`: in @libp2p/utils 7 its
 * promise is created once and never reset, so after the first drain it resolves at once forever
 * (a microtask busy loop that starves the event loop).
 */
function nextDrain(stream: Stream, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = () => {
      stream.removeEventListener('drain', done);
      stream.removeEventListener('close', done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    stream.addEventListener('drain', done);
    stream.addEventListener('close', done);
    signal.addEventListener('abort', done);
  });
}

function errorFrame(code: StreamErrorCode, reason: string): Uint8Array {
  const text = new TextEncoder().encode(`${code}\n${reason.slice(0, MAX_REASON_CHARS)}`);
  const out = new Uint8Array(1 + text.byteLength);
  out[0] = Kind.Error;
  out.set(text, 1);
  return out;
}

function chunkBytes(evt: StreamMessageEvent): Uint8Array {
  return evt.data instanceof Uint8Array ? evt.data : evt.data.subarray();
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
