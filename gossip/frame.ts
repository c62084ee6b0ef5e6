/**
 * Length-prefixed framing for shoal's own libp2p protocols (`/shoal/msg`, `/shoal/req`).
 *
 * A frame is a 4-byte big-endian body length followed by the body. The decoder checks the
 * announced length against a limit *before* buffering the body, so a peer that announces 4 GiB
 * costs us four bytes of header, not an allocation (MAX_MESSAGE_BYTES is enforced on input, not
 * trusted from the sender). A fixed 4-byte header instead of a varint keeps the parser trivial
 * and the overhead is irrelevant next to noise + yamux framing.
 */

export const FRAME_HEADER_BYTES = 4;

/** The largest body a 4-byte header can describe; limits above this are meaningless. */
const MAX_ENCODABLE = 0xffff_ffff;

export class FrameTooLargeError extends Error {
  constructor(
    readonly announced: number,
    readonly limit: number,
  ) {
    super(`frame of ${announced} bytes exceeds the limit of ${limit} bytes`);
    this.name = 'FrameTooLargeError';
  }
}

/** The 4-byte header announcing a body of `bodyBytes`. Send it, then the body (no copy needed). */
export function frameHeader(bodyBytes: number): Uint8Array {
  if (!Number.isInteger(bodyBytes) || bodyBytes < 0 || bodyBytes > MAX_ENCODABLE) {
    throw new RangeError(`cannot frame a body of ${bodyBytes} bytes`);
  }
  const header = new Uint8Array(FRAME_HEADER_BYTES);
  new DataView(header.buffer).setUint32(0, bodyBytes, false);
  return header;
}

/**
 * Incremental decoder: feed it the chunks a stream delivers (split anywhere), get back whole
 * frame bodies. Each body is a fresh copy, so a handler that keeps a small message does not pin
 * the (possibly large) network buffer it arrived in.
 */
export class FrameDecoder {
  readonly #maxBody: number;
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  /** Body length announced by the header being processed, or -1 while waiting for a header. */
  #bodyBytes = -1;

  constructor(maxBody: number) {
    this.#maxBody = maxBody;
  }

  /** Bytes received but not yet returned as a frame (at most header + limit + one chunk). */
  get buffered(): number {
    return this.#buffered;
  }

  /**
   * Append `chunk`; returns the frames it completed (often none or one). Throws
   * FrameTooLargeError when a header announces more than the limit — the stream is then
   * unusable (its framing can no longer be trusted) and should be reset by the caller.
   */
  push(chunk: Uint8Array): Uint8Array[] {
    if (chunk.byteLength > 0) {
      this.#chunks.push(chunk);
      this.#buffered += chunk.byteLength;
    }
    const frames: Uint8Array[] = [];
    for (;;) {
      if (this.#bodyBytes < 0) {
        if (this.#buffered < FRAME_HEADER_BYTES) break;
        const header = this.#take(FRAME_HEADER_BYTES);
        const announced = new DataView(header.buffer, header.byteOffset, FRAME_HEADER_BYTES).getUint32(
          0,
          false,
        );
        if (announced > this.#maxBody) throw new FrameTooLargeError(announced, this.#maxBody);
        this.#bodyBytes = announced;
      }
      if (this.#buffered < this.#bodyBytes) break;
      frames.push(this.#take(this.#bodyBytes));
      this.#bodyBytes = -1;
    }
    return frames;
  }

  /** Remove and return the first `n` buffered bytes as a fresh array (caller checked n <= buffered). */
  #take(n: number): Uint8Array {
    const out = new Uint8Array(n);
    let filled = 0;
    while (filled < n) {
      const head = this.#chunks[0]!;
      const wanted = n - filled;
      if (head.byteLength <= wanted) {
        out.set(head, filled);
        filled += head.byteLength;
        this.#chunks.shift();
      } else {
        out.set(head.subarray(0, wanted), filled);
        this.#chunks[0] = head.subarray(wanted);
        filled += wanted;
      }
    }
    this.#buffered -= n;
    return out;
  }
}
