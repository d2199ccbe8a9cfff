/**
 * What peers offer beyond consensus frames: announcements to the whole cluster (gossipsub)
 * and one-shot requests (one frame each way on a fresh stream). Production: net/p2p.ts.
 */
export interface PeerServices {
  /** Publishes `data` on the cluster's announcement topic (dropped when no peer listens). */
  announce(data: Uint8Array): void;
  /** Announcements from other peers: `from` is the authenticated signer. */
  onAnnouncement(handler: (from: string, data: Uint8Array) => void): void;
  /** Sends `body` to `peerId` on `protocol` and resolves with its one answer. Rejects on
   *  timeout, a closed stream or a bad frame. */
  request(peerId: string, protocol: string, body: unknown, timeoutMs: number): Promise<unknown>;
  /** Answers requests on `protocol`; `handler` sees the authenticated remote peer. */
  handle(protocol: string, handler: (from: string, body: unknown) => Promise<unknown>): Promise<void>;
  /** Peers with an open connection now. */
  peersConnected(): number;
}
