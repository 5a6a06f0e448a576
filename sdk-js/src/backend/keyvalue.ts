// The key-value store inside the host: `wasi:keyvalue` (store, atomics) and
// the host's `keyvalue-extras` (a time to live, keys by prefix). Every call
// throws the store's `error` variant (wrapped by componentize-js, with the
// variant as `payload`); `store.ts` turns it into a StoreError.
import { Cas, type CasError, increment, swap } from "wasi:keyvalue/atomics@0.2.0-draft2";
import { type Bucket, open } from "wasi:keyvalue/store@0.2.0-draft2";
import { listKeysWithPrefix, setWithTtl } from "optech:plugin/keyvalue-extras@0.1.0";

import type { KeyPage, RawBucket } from "./types.js";

export function openBucket(name: string): RawBucket {
  return new HostBucket(open(name));
}

class HostBucket implements RawBucket {
  readonly #bucket: Bucket;

  constructor(bucket: Bucket) {
    this.#bucket = bucket;
  }

  get(key: string): Uint8Array | undefined {
    return this.#bucket.get(key);
  }

  set(key: string, value: Uint8Array): void {
    this.#bucket.set(key, value);
  }

  setWithTtl(key: string, value: Uint8Array, ttlSeconds: bigint): void {
    setWithTtl(this.#bucket, key, value, ttlSeconds);
  }

  delete(key: string): void {
    this.#bucket.delete(key);
  }

  exists(key: string): boolean {
    return this.#bucket.exists(key);
  }

  increment(key: string, delta: bigint): bigint {
    return increment(this.#bucket, key, delta);
  }

  listKeysWithPrefix(prefix: string, cursor: string | undefined): KeyPage {
    return listKeysWithPrefix(this.#bucket, prefix, cursor);
  }

  compareAndSwap(key: string, expected: Uint8Array | undefined, value: Uint8Array): boolean {
    const cas = Cas.new(this.#bucket, key);
    let current: Uint8Array | undefined;
    try {
      current = cas.current();
    } catch (e) {
      cas[Symbol.dispose]();
      throw e;
    }
    if (!sameBytes(current, expected)) {
      cas[Symbol.dispose]();
      return false;
    }
    try {
      // `swap` takes the handle: it is the host's from here on.
      swap(cas, value);
      return true;
    } catch (e) {
      const error = payload(e) as CasError | undefined;
      if (error?.tag === "cas-failed") {
        // Changed since `Cas.new` read it; what it holds now is no use here.
        error.val[Symbol.dispose]();
        return false;
      }
      if (error?.tag === "store-error") throw error.val;
      throw e;
    }
  }
}

function sameBytes(a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

/** What an import threw: its `result`'s error, possibly wrapped. */
function payload(e: unknown): unknown {
  return typeof e === "object" && e !== null && "payload" in e
    ? (e as { payload: unknown }).payload
    : e;
}
