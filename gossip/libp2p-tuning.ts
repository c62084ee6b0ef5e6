import type { ConnectionEncrypter, SecuredConnection } from '@libp2p/interface';
import { type NoiseComponents, noise } from '@libp2p/noise';
import { StreamState, YamuxStream } from '@libp2p/yamux/stream';

/**
 * Two per-message costs of the libp2p stack (noise 17, yamux 8) that dominate a small message,
 * measured with two transports in one process (200-byte messages, one per write): ~340 µs of
 * CPU per message, both ends together, of which
 *
 * - ~30 µs per received noise message went into an exception: noise's length-prefix decoder
 *   reads the 2-byte length by throwing a `RangeError` when the buffer is empty, which is how it
 *   learns it has consumed every message of a chunk (one `new Error` with its stack per message);
 * - ~110 µs went into yamux window updates: after *every* data frame it receives, a yamux stream
 *   sends a window-update frame back (its own noise encryption, pnet encryption and socket write,
 *   then decryption and demuxing on the other side), however much window is left. go-yamux and
 *   the Rust implementation only send one once half the window is consumed.
 *
 * Both are fixed here, at our composition layer and without forking either package, by small
 * changes that keep their wire behaviour within the protocols (a decoder that returns "no length
 * yet" instead of throwing; fewer window updates, as the yamux spec allows). Both are guarded:
 * if a future version changes what they rely on, they leave it alone (tests fail loudly then:
 * test/transport-libp2p.test.ts, "libp2p tuning").
 */

/** Noise with a length decoder that does not throw to say "need more bytes". */
export function noiseTuned(): (components: NoiseComponents) => ConnectionEncrypter {
  const make = noise();
  return (components) => {
    const encrypter = make(components);
    const inbound = encrypter.secureInbound.bind(encrypter);
    const outbound = encrypter.secureOutbound.bind(encrypter);
    encrypter.secureInbound = (async (...args: Parameters<typeof inbound>) =>
      tuneSecured(await inbound(...args))) as typeof encrypter.secureInbound;
    encrypter.secureOutbound = (async (...args: Parameters<typeof outbound>) =>
      tuneSecured(await outbound(...args))) as typeof encrypter.secureOutbound;
    return encrypter;
  };
}

/** Connections whose noise decoder was replaced (tests). */
export const tuningStats = { noiseDecoders: 0, windowUpdatesSkipped: 0 };

interface LengthDecoderHost {
  lengthDecoder?: unknown;
  encodingLength?: unknown;
}

function tuneSecured<T extends SecuredConnection>(secured: T): T {
  const decoder = (secured.connection as unknown as { decoder?: LengthDecoderHost }).decoder;
  if (
    decoder !== undefined &&
    typeof decoder.lengthDecoder === 'function' &&
    typeof decoder.encodingLength === 'function' &&
    (decoder.encodingLength as (n: number) => number)(0) === 2
  ) {
    decoder.lengthDecoder = uint16BELength;
    tuningStats.noiseDecoders++;
  }
  return secured;
}

/**
 * Noise's 2-byte big-endian message length, or 0 while fewer than 2 bytes are buffered: the
 * decoder then needs `2 + 0` bytes, has fewer, and waits for the next chunk — exactly what its
 * caught `RangeError` did, without building an Error per message.
 */
export function uint16BELength(data: Uint8Array | { byteLength: number; get(i: number): number }): number {
  if (data.byteLength < 2) return 0;
  if (data instanceof Uint8Array) return (data[0]! << 8) | data[1]!;
  return (data.get(0) << 8) | data.get(1);
}

let yamuxPatched = false;

/**
 * Yamux streams send a window update only when less than half of the receive window is left
 * (or when the state needs a flag: SYN, ACK), instead of after every frame received. The sender
 * can still send half a window (128 KiB by default) before it would wait, so a stream never
 * stalls; large transfers still get updates (and window growth) every half window.
 */
export function tuneYamuxWindowUpdates(): void {
  if (yamuxPatched) return;
  const proto = YamuxStream.prototype as unknown as {
    sendWindowUpdate?: (this: YamuxWindowState) => void;
  };
  const original = proto.sendWindowUpdate;
  if (typeof original !== 'function') return;
  yamuxPatched = true;
  proto.sendWindowUpdate = function sendWindowUpdate(this: YamuxWindowState) {
    if (
      this.state === StreamState.Established &&
      typeof this.recvWindowCapacity === 'number' &&
      typeof this.recvWindow === 'number' &&
      this.recvWindowCapacity * 2 > this.recvWindow
    ) {
      tuningStats.windowUpdatesSkipped++;
      return;
    }
    original.call(this);
  };
}

interface YamuxWindowState {
  state: StreamState;
  recvWindow: number;
  recvWindowCapacity: number;
}
