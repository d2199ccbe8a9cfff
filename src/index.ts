/**
 * Pangea: a consensus-first replicated state machine server.
 * The package's public surface; the server itself is started with `pangea serve`.
 */
export {};
