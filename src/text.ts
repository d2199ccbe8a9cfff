/** Whether `s` has no lone surrogate, so that it has a UTF-8 form (String.prototype.isWellFormed,
 *  Node 20 on; not yet in TypeScript's ES2023 lib). */
export function wellFormed(s: string): boolean {
  return (s as unknown as { isWellFormed(): boolean }).isWellFormed();
}
