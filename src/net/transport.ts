/**
 * How replicas reach each other. Production: libp2p (p2p.ts). The simulator and unit tests
 * use in-memory twins.
 */
import type { WireEnvelope } from '../codec/frames.js';

export type { WireEnvelope };

export interface Transport {
  /** This node's libp2p peer id (the consensus NodeId). */
  readonly peerId: string;
  /** Multiaddrs this node listens on, with its peer id. */
  addresses(): string[];
  start(): Promise<void>;
  stop(): Promise<void>;
  /**
   * Sends envelopes. Never throws and never blocks: frames for one peer within one
   * event-loop turn are coalesced into one write; what cannot be delivered is dropped and
   * counted (consensus retransmits what matters).
   */
  send(envelopes: readonly WireEnvelope[]): void;
  /** Decoded but not validated envelopes (the consensus core validates everything). */
  onMessage(handler: (envelope: unknown) => void): void;
  /** Where a peer can be reached, learned from membership or a join answer. */
  setPeerAddresses(peerId: string, multiaddrs: readonly string[]): void;
  /** Counters (frames sent, rejected, dropped...) exported as metrics. */
  readonly stats?: object;
}

export type { PeerServices } from '../sync/peer-services.js';
