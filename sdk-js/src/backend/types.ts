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
  /** Opens a bucket of the key-value store; throws a {@link KvError} (see `store.ts`). */
  openBucket(name: string): RawBucket;
}

/**
 * Why a store call failed: `wasi:keyvalue/store`'s `error`, as componentize-js
 * presents a variant. Backends throw it (inside the host wrapped in an error
 * whose `payload` it is); `store.ts` turns it into a `StoreError`.
 */
export type KvError =
  | { tag: "no-such-store" }
  | { tag: "access-denied" }
  | { tag: "other"; val: string };

/** One page of keys. */
export interface KeyPage {
  keys: string[];
  /** Where the next page starts; `undefined` on the last. */
  cursor?: string;
}

/**
 * An open bucket, in the contract's terms (bytes, bigint, pages): the host's
 * `wasi:keyvalue` imports inside a component, a map in memory in Node. Every
 * method may throw a {@link KvError}.
 */
export interface RawBucket {
  get(key: string): Uint8Array | undefined;
  set(key: string, value: Uint8Array): void;
  /** `keyvalue-extras.set-with-ttl`: `ttlSeconds` is at least 1. */
  setWithTtl(key: string, value: Uint8Array, ttlSeconds: bigint): void;
  delete(key: string): void;
  exists(key: string): boolean;
  increment(key: string, delta: bigint): bigint;
  /** `keyvalue-extras.list-keys-with-prefix`: one page, in byte order. */
  listKeysWithPrefix(prefix: string, cursor: string | undefined): KeyPage;
  /**
   * Sets `value` if the key holds `expected` (`undefined`: absent), in one
   * step; whether it did. The value set has no time to live.
   */
  compareAndSwap(key: string, expected: Uint8Array | undefined, value: Uint8Array): boolean;
}
