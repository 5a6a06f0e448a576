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
 * @module
 */
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
