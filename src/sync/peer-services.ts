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
   *  timeout, a closed stream or a bad frame; with `RequestNotSent` when the request surely
   *  never left (no connection, the stream refused before anything was written). */
  request(peerId: string, protocol: string, body: unknown, timeoutMs: number): Promise<unknown>;
  /** Answers requests on `protocol`; `handler` sees the authenticated remote peer. At most
   *  `streamsMax` requests of one connection are served at once (default 16). */
  handle(protocol: string, handler: (from: string, body: unknown) => Promise<unknown>, opts?: { readonly streamsMax?: number }): Promise<void>;
  /** Peers with an open connection now. */
  peersConnected(): number;
}

/** A request that surely never reached the peer: retrying it cannot apply anything twice. */
export class RequestNotSent extends Error {}
