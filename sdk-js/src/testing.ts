/**
 * Unit tests of a handler in Node, without WebAssembly: `run` calls a plugin's
 * `handle` as the host would, with the inputs and config you give, and says
 * what the host would answer.
 *
 * ```ts
 * import { test } from "node:test";
 * import assert from "node:assert/strict";
 * import { run } from "optech-sdk/testing";
 * import { handle } from "../src/index.ts";
 *
 * test("greets by name", async () => {
 *   const out = await run(handle, { inputs: { name: "Ada" }, config: { greeting: "hi" } });
 *   assert.deepEqual(out.data, { message: "hi, Ada!" });
 * });
 * ```
 *
 * The key-value store (`store.open` of `optech-sdk`) is in memory in Node,
 * one for the process, kept from one `run` to the next as the host's store
 * outlives an instance; {@link store} here controls it:
 *
 * ```ts
 * import { beforeEach } from "node:test";
 * import { store as kv } from "optech-sdk";
 * import { store } from "optech-sdk/testing";
 *
 * beforeEach(() => store.reset());
 *
 * test("counts visits", async () => {
 *   store.grant("counters");                        // as `stores = ["counters"]`
 *   await run(handle, { inputs: { user: "ada" } });
 *   const out = await run(handle, { inputs: { user: "ada" } });
 *   assert.equal(out.data?.seen, "2");
 *   assert.equal(kv.open("counters").get("seen:ada"), "2");
 * });
 * ```
 *
 * @module
 */
import { memory } from "./backend/memory.js";
import type { Level } from "./backend/types.js";
import { current, type RunContext } from "./context.js";
import type { Handle, HandleError } from "./handler.js";

/** What to call a handler with. */
export interface RunOptions {
  /** The request's key; default `"test"`. */
  key?: string;
  /** The request's inputs, as an object or `[name, value]` pairs (request order). */
  inputs?: Record<string, string> | Iterable<readonly [string, string]>;
  /** What `config(name)` returns during the call. */
  config?: Record<string, string>;
  /**
   * What `fetch` is during the call (a stand-in for the plugin's back end);
   * default: Node's own `fetch`.
   */
  fetch?: typeof globalThis.fetch;
}

/** What the host would answer. */
export interface Outcome {
  /** `200` with data, `400 invalid_input`, or `500 plugin_error`. */
  status: 200 | 400 | 500;
  /** The answer's data (`status` 200), values as the host sends them. */
  data?: Record<string, string>;
  /** Why there is no data (`status` 400 or 500). */
  error?: { kind: HandleError["tag"]; message: string };
  /** The lines the handler logged with `log`, in order. */
  logs: Array<{ level: Level; message: string }>;
}

/** Calls `handle` once, as the host would, and says what the host would answer. */
export async function run(handle: Handle, options: RunOptions = {}): Promise<Outcome> {
  const inputs = options.inputs ?? {};
  const pairs: Array<[string, string]> = (
    isIterable(inputs) ? [...inputs] : Object.entries(inputs)
  ).map(([name, value]) => [String(name), String(value)]);
  const context: RunContext = {
    config: new Map(Object.entries(options.config ?? {})),
    logs: [],
    fetch: options.fetch,
  };
  if (options.fetch) installFetch();
  try {
    const fields = await current.run(context, () => handle(options.key ?? "test", pairs));
    return { status: 200, data: Object.fromEntries(fields), logs: context.logs };
  } catch (e) {
    const error = asHandleError(e);
    return {
      status: error.tag === "invalid-input" ? 400 : 500,
      error: { kind: error.tag, message: error.val },
      logs: context.logs,
    };
  }
}

/**
 * The key-value store of unit tests: in memory, with the host's semantics
 * (values are bytes, a `ttl` expires a key, `increment` stores decimal text,
 * keys list in byte order, the host's default key and value size limits).
 * Until {@link store.grant}, every bucket opens.
 */
export const store: {
  /**
   * Only these buckets open from now on, as if `stores` in the plugin's
   * `[plugins.NAME]` table named just them: any other fails with a
   * `StoreError` of kind `"access-denied"`. Replaces an earlier grant.
   */
  readonly grant: (...buckets: string[]) => void;
  /**
   * Every store call fails with a `StoreError` of kind `"other"` and this
   * message, as when the host's store is down; `undefined` ends it.
   */
  readonly fail: (message: string | undefined) => void;
  /** Moves the store's clock `seconds` ahead, so that keys set with a `ttl` expire without waiting. */
  readonly advance: (seconds: number) => void;
  /** Empties every bucket, lifts the grant (every bucket opens), ends `fail`, resets the clock. */
  readonly reset: () => void;
} = Object.freeze({
  grant: (...buckets: string[]) => memory.grant(buckets),
  fail: (message: string | undefined) => memory.fail(message),
  advance: (seconds: number) => {
    if (!Number.isFinite(seconds) || seconds < 0) {
      throw new RangeError(`advance takes a number of seconds, not ${String(seconds)}`);
    }
    memory.advance(seconds);
  },
  reset: () => memory.reset(),
});

let installed = false;

/** Routes the global `fetch` to the run's stand-in, when it has one. */
function installFetch(): void {
  if (installed) return;
  installed = true;
  const nodeFetch = globalThis.fetch;
  globalThis.fetch = (input, init) => (current.getStore()?.fetch ?? nodeFetch)(input, init);
}

function asHandleError(e: unknown): HandleError {
  if (typeof e === "object" && e !== null) {
    const { tag, val } = e as { tag?: unknown; val?: unknown };
    if ((tag === "invalid-input" || tag === "failed") && typeof val === "string") {
      return { tag, val };
    }
  }
  // Not thrown through `handler` (a hand-written handle): what the host would make of it.
  return { tag: "failed", val: e instanceof Error ? e.message : String(e) };
}

function isIterable<T>(value: unknown): value is Iterable<T> {
  return typeof value === "object" && value !== null && Symbol.iterator in value;
}
