/**
 * Yamux window updates when half the window is used, not after every frame.
 *
 * `@chainsafe/libp2p-yamux` 8.0.1 answers every data frame it receives with a window-update
 * frame (`YamuxStream.handleData` -> `sendWindowUpdate`, which sends whenever any credit was
 * used). On the consensus link that is one more noise-encrypted frame and one more socket
 * write for every frame of frames we receive: measured on a 3-node cluster at 64 clients
 * (TCP, `npm run bench -- models`), `sendWindowUpdate` was 5-6% of the leader's CPU before
 * counting the peer's cost of reading them. Go's and Rust's yamux send the update once half
 * the window is used (hashicorp/yamux `sendWindowUpdate`, rust-yamux #109); so does this.
 *
 * The sender keeps at least half its window in hand, so it never waits on us for credit it
 * would otherwise have had; SYN/ACK updates (a stream being opened or accepted) and a paused
 * stream are left to the library, unchanged. The library's own window growth (doubling while
 * updates come faster than 4 RTTs) still runs on each update that is sent.
 *
 * A patch of one method of a dependency's prototype (the lock holds 8.0.1; the test in
 * test/net/yamux-window.test.ts fails if the fields it reads move or the rule stops holding).
 */
import { StreamState, YamuxStream } from '@chainsafe/libp2p-yamux/stream';

interface Window {
  state: StreamState;
  recvWindow: number;
  recvWindowCapacity: number;
}

let installed = false;

/** Window updates this process's streams sent (the library's rule ran) and held back. */
export const yamuxWindowStats = { sent: 0, heldBack: 0 };

/** Installs the rule once per process (idempotent). */
export function installYamuxWindowRule(): void {
  if (installed) return;
  installed = true;
  const proto = YamuxStream.prototype as unknown as { sendWindowUpdate(this: YamuxStream): void };
  const library = proto.sendWindowUpdate;
  proto.sendWindowUpdate = function sendWindowUpdate(this: YamuxStream): void {
    const s = this as unknown as Window;
    if (s.state === StreamState.Established && s.recvWindowCapacity * 2 > s.recvWindow) {
      yamuxWindowStats.heldBack++;
      return;
    }
    yamuxWindowStats.sent++;
    library.call(this);
  };
}
