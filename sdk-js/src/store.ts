import { backend } from "#backend";

import type { KvError, RawBucket } from "./backend/types.js";
import { StoreError } from "./errors.js";

/** How to set a key. */
export interface SetOptions {
  /**
   * Seconds until the key expires (a whole number, at least 1): after that it
   * reads as absent, as if deleted. Without it, the key stays until deleted.
   */
  ttl?: number;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * A bucket of the host's key-value store: keys (non-empty strings) to values
 * (bytes, or text as UTF-8). Get one with {@link store.open}. Every call is
 * synchronous and may throw a {@link StoreError}.
 */
export class Bucket {
  /** The bucket's name, as `stores` in optech.toml names it. */
  readonly name: string;
  #raw: RawBucket | undefined;

  /** @internal Use `store.open(name)`. */
  constructor(name: string) {
    this.name = name;
  }

  /** The key's value as text (UTF-8), or `null` if it is absent or expired. */
  get(key: string): string | null {
    const bytes = this.getBytes(key);
    if (bytes === null) return null;
    try {
      return decoder.decode(bytes);
    } catch {
      throw new TypeError(
        `the value of key \`${key}\` in bucket \`${this.name}\` is not UTF-8 text: read it with getBytes`,
      );
    }
  }

  /** The key's value, or `null` if it is absent or expired. */
  getBytes(key: string): Uint8Array | null {
    return this.#call((raw) => raw.get(key)) ?? null;
  }

  /** Sets the key to `value` (stored as UTF-8), replacing any value, for `ttl` seconds if given. */
  set(key: string, value: string, options: SetOptions = {}): void {
    this.setBytes(key, encoder.encode(String(value)), options);
  }

  /** Sets the key to `value`, replacing any value, for `ttl` seconds if given. */
  setBytes(key: string, value: Uint8Array, options: SetOptions = {}): void {
    const ttl = ttlSeconds(options.ttl);
    this.#call((raw) =>
      ttl === undefined ? raw.set(key, value) : raw.setWithTtl(key, value, ttl),
    );
  }

  /** Deletes the key; nothing happens if it is absent. */
  delete(key: string): void {
    this.#call((raw) => raw.delete(key));
  }

  /** Whether the key holds a value (one not expired). */
  exists(key: string): boolean {
    return this.#call((raw) => raw.exists(key));
  }

  /**
   * Adds `by` (an integer, may be negative) to the integer the key holds, in
   * one step, and returns the sum. An absent key counts as 0. The sum is
   * stored as decimal text, so `get` of a counter returns `"5"`; a key
   * holding anything else is a `StoreError`, and so is a sum past a 64-bit
   * integer. The key keeps its time to live, if it has one.
   */
  increment(key: string, by = 1): number {
    if (!Number.isSafeInteger(by)) {
      throw new RangeError(`increment takes a whole number, not ${String(by)}`);
    }
    return Number(this.#call((raw) => raw.increment(key, BigInt(by))));
  }

  /** Every key (not expired) that starts with `prefix`, in byte order. */
  keys(prefix = ""): string[] {
    return this.#call((raw) => {
      const keys: string[] = [];
      let cursor: string | undefined;
      do {
        const page = raw.listKeysWithPrefix(prefix, cursor);
        keys.push(...page.keys);
        cursor = page.cursor;
      } while (cursor !== undefined);
      return keys;
    });
  }

  /**
   * Sets the key to `value` only if it holds `expected` now (`null`: only if
   * it is absent), in one step; whether it did. `false` means another request
   * changed the key first: read it again, compute again, retry.
   *
   * The value it sets has no time to live (the host's compare-and-swap,
   * `wasi:keyvalue/atomics`, takes none), so this takes no `ttl`.
   */
  compareAndSwap(key: string, expected: string | null, value: string): boolean {
    return this.compareAndSwapBytes(
      key,
      expected === null ? null : encoder.encode(String(expected)),
      encoder.encode(String(value)),
    );
  }

  /** {@link Bucket.compareAndSwap} with bytes. */
  compareAndSwapBytes(key: string, expected: Uint8Array | null, value: Uint8Array): boolean {
    return this.#call((raw) => raw.compareAndSwap(key, expected ?? undefined, value));
  }

  /** Opens the bucket on its first call (not at `store.open`, which may run
   * when the plugin is built) and turns the store's errors into StoreErrors. */
  #call<T>(fn: (raw: RawBucket) => T): T {
    try {
      this.#raw ??= backend.openBucket(this.name);
      return fn(this.#raw);
    } catch (e) {
      throw storeError(this.name, e);
    }
  }
}

/**
 * The host's key-value store: state that outlives the instance (which the host
 * may make fresh for every request), shared by every instance of the plugin.
 *
 * ```ts
 * import { handler, store } from "optech-sdk";
 *
 * const counters = store.open("counters");
 *
 * export const handle = handler((req) => {
 *   const seen = counters.increment(`seen:${req.inputs.require("user")}`);
 *   return { seen };
 * });
 * ```
 *
 * A plugin opens only the buckets that `stores` names in its `[plugins.NAME]`
 * table of optech.toml; any other fails with a {@link StoreError} of kind
 * `"access-denied"`. In Node (unit tests), the store is in memory and every
 * bucket opens; `store` in `optech-sdk/testing` controls it.
 */
export const store: {
  /**
   * The bucket called `name`. Nothing is checked yet: the first call on it
   * opens it (so it may be called at the top of a module, which runs when
   * the plugin is built), and throws if the bucket is not granted.
   */
  readonly open: (name: string) => Bucket;
} = Object.freeze({
  open(name: string): Bucket {
    if (typeof name !== "string" || name === "") {
      throw new TypeError("store.open takes a bucket's name");
    }
    return new Bucket(name);
  },
});

function ttlSeconds(ttl: number | undefined): bigint | undefined {
  if (ttl === undefined) return undefined;
  if (!Number.isSafeInteger(ttl) || ttl < 1) {
    throw new RangeError(`ttl is a whole number of seconds, at least 1, not ${String(ttl)}`);
  }
  return BigInt(ttl);
}

/** A StoreError for what a store call threw, if it is the store's error. */
function storeError(bucket: string, e: unknown): unknown {
  if (e instanceof StoreError) return e;
  const error = payload(e);
  if (!isKvError(error)) return e;
  switch (error.tag) {
    case "access-denied":
      return new StoreError(
        "access-denied",
        bucket,
        `bucket \`${bucket}\` is not granted to this plugin: add it to \`stores\` in its [plugins.NAME] table of optech.toml`,
      );
    case "no-such-store":
      return new StoreError("no-such-store", bucket, `there is no bucket \`${bucket}\` in the host's store`);
    case "other":
      return new StoreError("other", bucket, error.val);
  }
}

/** What an import threw: its `result`'s error, possibly wrapped. */
function payload(e: unknown): unknown {
  return typeof e === "object" && e !== null && "payload" in e
    ? (e as { payload: unknown }).payload
    : e;
}

function isKvError(e: unknown): e is KvError {
  if (typeof e !== "object" || e === null) return false;
  const { tag, val } = e as { tag?: unknown; val?: unknown };
  return tag === "access-denied" || tag === "no-such-store" || (tag === "other" && typeof val === "string");
}
