/**
 * Where the log is cut into archive segments: a function of the log alone, computed by the
 * state machine as it applies, so every replica records the same boundaries.
 *
 * A segment is a run of whole slots. It ends at the first slot whose last index reaches the
 * next multiple of `segmentEntries` above the segment's first index, or earlier, at the first
 * slot at which its accounted bytes reach `SEGMENT_BYTES_MAX`. (A slot is at most one
 * consensus frame, 16 MiB, so a segment passes the bound by less than that.) Accounted
 * bytes are the hash chain's bytes of each command plus `SLOT_OVERHEAD_BYTES` a slot: a
 * fixed rule, independent of any encoder's version.
 */
export const SEGMENT_ENTRIES_DEFAULT = 10_000;
export const SEGMENT_BYTES_MAX = 512 * 1024 * 1024;
export const SLOT_OVERHEAD_BYTES = 16;

export interface SlotIndex {
  readonly slot: number;
  readonly index: number;
}

/** A finished segment, as recorded when its last slot was applied. */
export interface SegmentBound {
  /** The segment's first slot, and the index its first command takes (its commands may
   *  start later if its first slots are no-ops). */
  readonly first: SlotIndex;
  /** The last slot and the index of the last command at or before it. */
  readonly last: SlotIndex;
  /** The hash chain before the first command and after the last one. */
  readonly chainBefore: Uint8Array;
  readonly chainAfter: Uint8Array;
  readonly bytes: number;
}

/** The segment being filled: where it starts, and its bytes so far. */
export interface OpenSegment {
  readonly first: SlotIndex;
  readonly chainBefore: Uint8Array;
  readonly bytes: number;
}

/** The first index at which a segment starting at `firstIndex` ends. */
export function boundaryIndex(firstIndex: number, segmentEntries: number): number {
  return (Math.floor((firstIndex - 1) / segmentEntries) + 1) * segmentEntries;
}

/** Does the open segment end with this slot (whose commands end at `lastIndex`)? */
export function endsSegment(open: OpenSegment, bytesAfter: number, lastIndex: number, segmentEntries: number): boolean {
  return lastIndex >= boundaryIndex(open.first.index, segmentEntries) || bytesAfter >= SEGMENT_BYTES_MAX;
}
