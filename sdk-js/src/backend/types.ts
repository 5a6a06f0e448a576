/** A log line's level, as the host's log has them. */
export type Level = "trace" | "debug" | "info" | "warn" | "error";

/**
 * What the SDK needs from where it runs: the host (inside a component) or Node
 * (a handler's unit tests). The package's `#backend` import picks one by
 * condition: `optech-component` when `optech build` bundles a plugin.
 */
export interface Backend {
  config(name: string): string | undefined;
  log(level: Level, message: string): void;
  /** Keeps the event loop waiting while a handler's promise is pending; call the result when it settles. */
  keepAlive(): () => void;
}
