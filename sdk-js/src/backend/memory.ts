// The key-value store in Node, for a handler's unit tests: buckets in memory,
// shared by every `testing.run` of the process (as the host's store outlives
// an instance), with the host's semantics: values are bytes, a time to live
// makes a key read as absent once it passes, `increment` keeps the sum as
// decimal text, keys list in byte order a page at a time, and the host's
// default key and value size limits hold. `optech-sdk/testing`'s `store`
// controls it: which buckets are granted, its clock, a store that is down.
import type { KeyPage, KvError, RawBucket } from "./types.js";

/** Keys per page of `list-keys-with-prefix`, as the host pages them. */
export const PAGE = 1000;
/** The host's default `[store]` limits (`max_key_size`, `max_value_size`). */
const MAX_KEY_BYTES = 1024;
const MAX_VALUE_BYTES = 1024 * 1024;
const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;

interface Stored {
  value: Uint8Array;
  /** When it expires, in the double's clock (ms); never if undefined. */
  expires?: number;
}

const buckets = new Map<string, Map<string, Stored>>();
/** The buckets that open; every bucket when undefined. */
let granted: Set<string> | undefined;
/** Every call fails with this message when set: a store that is down. */
let failure: string | undefined;
/** How far `advance` moved the double's clock ahead of Date.now(), in ms. */
let offsetMs = 0;

const encoder = new TextEncoder();

/** The double's controls, for `optech-sdk/testing`. */
export const memory = {
  grant(names: Iterable<string>): void {
    granted = new Set(names);
  },
  fail(message: string | undefined): void {
    failure = message;
  },
  advance(seconds: number): void {
    offsetMs += seconds * 1000;
  },
  reset(): void {
    buckets.clear();
    granted = undefined;
    failure = undefined;
    offsetMs = 0;
  },
};

export function openBucket(name: string): RawBucket {
  if (granted !== undefined && !granted.has(name)) throw kvError({ tag: "access-denied" });
  return new MemoryBucket(name);
}

class MemoryBucket implements RawBucket {
  readonly #name: string;

  constructor(name: string) {
    this.#name = name;
  }

  /** Grants may change between tests: every call checks, as the host's open does. */
  #check(key?: string): void {
    if (failure !== undefined) throw other(failure);
    if (granted !== undefined && !granted.has(this.#name)) throw kvError({ tag: "access-denied" });
    if (key !== undefined) checkKey(key);
  }

  /** The bucket's map, made on its first write. */
  #entries(create: true): Map<string, Stored>;
  #entries(create: false): Map<string, Stored> | undefined;
  #entries(create: boolean): Map<string, Stored> | undefined {
    let entries = buckets.get(this.#name);
    if (entries === undefined && create) {
      entries = new Map();
      buckets.set(this.#name, entries);
    }
    return entries;
  }

  #live(key: string): Stored | undefined {
    const entries = this.#entries(false);
    const stored = entries?.get(key);
    if (stored === undefined) return undefined;
    if (stored.expires !== undefined && stored.expires <= now()) {
      entries!.delete(key);
      return undefined;
    }
    return stored;
  }

  #put(key: string, value: Uint8Array, expires: number | undefined): void {
    checkValue(value);
    this.#entries(true).set(key, { value: value.slice(), expires });
  }

  get(key: string): Uint8Array | undefined {
    this.#check(key);
    return this.#live(key)?.value.slice();
  }

  set(key: string, value: Uint8Array): void {
    this.#check(key);
    this.#put(key, value, undefined);
  }

  setWithTtl(key: string, value: Uint8Array, ttlSeconds: bigint): void {
    this.#check(key);
    if (ttlSeconds < 1n) throw other("a time to live must be at least 1 second");
    this.#put(key, value, now() + Number(ttlSeconds) * 1000);
  }

  delete(key: string): void {
    this.#check(key);
    this.#entries(false)?.delete(key);
  }

  exists(key: string): boolean {
    this.#check(key);
    return this.#live(key) !== undefined;
  }

  increment(key: string, delta: bigint): bigint {
    this.#check(key);
    const live = this.#live(key);
    let current = 0n;
    if (live !== undefined) {
      const text = new TextDecoder().decode(live.value);
      if (!/^[+-]?[0-9]+$/.test(text) || BigInt(text) < I64_MIN || BigInt(text) > I64_MAX) {
        throw other(`key \`${key}\` does not hold a decimal integer, so it cannot be incremented`);
      }
      current = BigInt(text);
    }
    const sum = current + delta;
    if (sum < I64_MIN || sum > I64_MAX) {
      throw other(`incrementing key \`${key}\` overflows a 64-bit integer`);
    }
    // Like the host: the sum keeps the key's time to live.
    this.#put(key, encoder.encode(sum.toString()), live?.expires);
    return sum;
  }

  listKeysWithPrefix(prefix: string, cursor: string | undefined): KeyPage {
    this.#check();
    const keys = [...(this.#entries(false)?.keys() ?? [])]
      .filter((key) => key.startsWith(prefix))
      .filter((key) => cursor === undefined || byteOrder(key, cursor) > 0)
      .filter((key) => this.#live(key) !== undefined)
      .sort(byteOrder)
      .slice(0, PAGE);
    return { keys, cursor: keys.length === PAGE ? keys[keys.length - 1] : undefined };
  }

  compareAndSwap(key: string, expected: Uint8Array | undefined, value: Uint8Array): boolean {
    this.#check(key);
    const current = this.#live(key)?.value;
    if (!sameBytes(current, expected)) return false;
    this.#put(key, value, undefined);
    return true;
  }
}

function now(): number {
  return Date.now() + offsetMs;
}

/** Throws what the host would for a key out of its limits. */
function checkKey(key: string): void {
  const len = encoder.encode(key).length;
  if (len === 0) throw other("a key must not be empty");
  if (len > MAX_KEY_BYTES) {
    throw other(`a key of ${len} bytes is over the limit of ${MAX_KEY_BYTES} (store.max_key_size)`);
  }
}

function checkValue(value: Uint8Array): void {
  if (value.length > MAX_VALUE_BYTES) {
    throw other(
      `a value of ${value.length} bytes is over the limit of ${MAX_VALUE_BYTES} (store.max_value_size)`,
    );
  }
}

function other(message: string): KvErrorThrown {
  return kvError({ tag: "other", val: message });
}

/** What componentize-js throws for an import's error: the variant as `payload`. */
type KvErrorThrown = Error & { payload: KvError };

function kvError(payload: KvError): KvErrorThrown {
  const error = new Error(payload.tag === "other" ? payload.val : payload.tag) as KvErrorThrown;
  Object.defineProperty(error, "payload", { value: payload });
  return error;
}

function sameBytes(a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

/** UTF-8 byte order (code point order), which JS's UTF-16 `<` is not. */
export function byteOrder(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return unit(x) - unit(y);
  }
  return a.length - b.length;
}

/** Moves surrogates (U+D800-DFFF, the halves of code points past U+FFFF) above U+E000-FFFF. */
function unit(c: number): number {
  if (c < 0xd800) return c;
  return c >= 0xe000 ? c - 0x800 : c + 0x2000;
}
