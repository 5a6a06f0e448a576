import { backend } from "#backend";

import { type Data, type Fields, toFields } from "./data.js";
import { InvalidInput } from "./errors.js";
import { Inputs, type Request } from "./request.js";

/** The WIT's `error`: why a handler produced no data. */
export type HandleError = { tag: "invalid-input"; val: string } | { tag: "failed"; val: string };

/**
 * The function a plugin exports as `handle`: what the host calls, once per
 * request. Make one with {@link handler}; call one in a unit test with
 * `run` from `optech-sdk/testing`. It returns the answer's fields (a promise of
 * them if the handler is async), or throws (rejects with) a {@link HandleError}.
 */
export type Handle = (
  key: string,
  inputs: Array<[string, string]>,
) => Fields | Promise<Fields>;

/**
 * Makes a plugin's `handle` export from a function of one {@link Request}, sync
 * or async. What it returns is the answer's `data` (see {@link Data}); an
 * {@link InvalidInput} it throws is answered `400 invalid_input`, anything
 * else it throws `500 plugin_error`, with the error's message.
 *
 * ```ts
 * import { handler, config } from "optech-sdk";
 *
 * export const handle = handler((req) => {
 *   const name = req.inputs.require("name");
 *   return { message: `${config("greeting") ?? "hello"}, ${name}!` };
 * });
 * ```
 */
export function handler(fn: (req: Request) => Data | Promise<Data>): Handle {
  return (key: string, inputs: Array<[string, string]>): Fields | Promise<Fields> => {
    let result: Data | Promise<Data>;
    try {
      result = fn({ key, inputs: new Inputs(inputs) });
      // A sync handler answers here: no promise, no event loop to keep
      // alive, nothing more for a fresh instance to run than the handler.
      if (!isPromiseLike(result)) return toFields(result);
    } catch (e) {
      throw handleError(e);
    }
    return settle(result);
  };
}

/** Waits for an async handler's data, keeping the event loop alive meanwhile. */
async function settle(pending: PromiseLike<Data>): Promise<Fields> {
  const release = backend.keepAlive();
  try {
    return toFields(await pending);
  } catch (e) {
    throw handleError(e);
  } finally {
    release();
  }
}

function isPromiseLike(value: unknown): value is PromiseLike<Data> {
  return (
    typeof value === "object" &&
    value !== null &&
    typeof (value as { then?: unknown }).then === "function"
  );
}

/** What the host is told about a thrown value. */
function handleError(e: unknown): HandleError {
  if (e instanceof InvalidInput || (e instanceof Error && e.name === "InvalidInput")) {
    return { tag: "invalid-input", val: e.message };
  }
  if (isHandleError(e)) {
    return e;
  }
  if (e instanceof Error) {
    if (e.stack) backend.log("debug", `${e.name}: ${e.message}\n${e.stack}`);
    return { tag: "failed", val: e.message || e.name };
  }
  return { tag: "failed", val: typeof e === "string" ? e : safeText(e) };
}

function isHandleError(e: unknown): e is HandleError {
  if (typeof e !== "object" || e === null) return false;
  const { tag, val } = e as { tag?: unknown; val?: unknown };
  return (tag === "invalid-input" || tag === "failed") && typeof val === "string";
}

function safeText(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
