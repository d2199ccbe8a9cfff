/** The error every PangeaClient call throws (src/client.ts). */
export class PangeaError extends Error {
  constructor(
    readonly status: number,
    /** The contract's code (`not_found`, `precondition_failed`, `unavailable`, `outcome_unknown`, …). */
    readonly code: string,
    message: string,
    /** For `412`: the key's current revision, or null when it is absent. */
    readonly revision?: number | null,
    /** The error body's other fields (a block conflict's `conflicts`, `pending`, `index`). */
    readonly details: Readonly<Record<string, unknown>> = {},
  ) {
    super(message);
    this.name = 'PangeaError';
  }

  /** Whether the write may have been applied (or may still be): its outcome is unknown.
   *  Otherwise it surely was not. */
  get mayHaveApplied(): boolean {
    return this.code === 'outcome_unknown';
  }
}
