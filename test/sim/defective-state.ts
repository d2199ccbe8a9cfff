/**
 * Broken state machines for the simulator's self-test (defects.test.ts): each defect breaks
 * one of apply's rules, which `ApplyRules` (src/state/kv.ts) keeps whole, to prove the
 * simulator notices.
 */
import type { RequestId } from '../../src/state/command.js';
import { ApplyRules, type SessionRecord } from '../../src/state/kv.js';
import { StagedState, type SealedWrite } from '../../src/state/staged.js';

export interface StateDefects {
  /** Log time is the proposer's clock, unclamped: a clock an hour fast expires every session. */
  logTimeFollowsProposer?: boolean;
  /** A retried request (same client and sequence number) is applied again. */
  retriesApplyAgain?: boolean;
  /** Staged writes are forgotten when handed to the writer, not once it has committed them:
   *  until it does, reads (apply's own among them) see the state before them. */
  forgetAtHandOver?: boolean;
}

/** A stage that forgets its writes too early (StateDefects.forgetAtHandOver). */
export class DefectiveStagedState extends StagedState {
  protected override handedOver(batch: readonly SealedWrite[]): void {
    this.forget(batch);
  }
}

export class DefectiveApplyRules extends ApplyRules {
  constructor(
    private readonly defects: StateDefects,
    leaseExpiryDeletesMax?: number,
  ) {
    super(leaseExpiryDeletesMax);
  }

  override logTimeAfter(logTime: number, time: number): number {
    return this.defects.logTimeFollowsProposer ? Math.max(logTime, time) : super.logTimeAfter(logTime, time);
  }

  override answered(session: SessionRecord | undefined, rid: RequestId): boolean {
    return this.defects.retriesApplyAgain ? false : super.answered(session, rid);
  }
}
