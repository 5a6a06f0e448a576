/**
 * Write OpTech data-request handlers in TypeScript or JavaScript.
 *
 * OpTech POSTs a signed data request `{link, key, inputs}` to a host you run;
 * the `optech` host checks it and hands it to the plugin its `key` maps to. A
 * plugin is a folder with a `package.json` whose entry (`src/index.ts`) exports
 * `handle`; `optech build` bundles it and turns it into a WebAssembly
 * component that the host runs in a sandbox, a fresh instance per request.
 *
 * ```ts
 * import { handler, config, log, InvalidInput } from "optech-sdk";
 *
 * export const handle = handler(async (req) => {
 *   const id = req.inputs.require("order_id");        // absent: answered 400
 *   const base = config("base_url");
 *   if (!base) throw new Error("base_url is not set"); // answered 500
 *   const res = await fetch(`${base}/orders/${id}`);   // only to allowed_hosts
 *   if (res.status === 404) throw new InvalidInput(`no order ${id}`);
 *   log.info(`order ${id} found`);
 *   return { order: await res.text(), checked: true };
 * });
 * ```
 *
 * Inside the host, `fetch()` is the host's outbound client: it reaches only the
 * plugin's `allowed_hosts`, within `http_timeout` and `max_http_response`, and
 * rejects with a {@link FetchError} that says why. `console.log` lines go to the
 * host's log. In Node (a handler's unit tests, with `optech-sdk/testing`), the
 * same code runs against Node's own `fetch`.
 *
 * State that must outlive a request (a counter, a cached token) goes in the
 * host's key-value store: `store.open("counters")` gives a {@link Bucket}
 * with `get`, `set` (with a `ttl`), `increment`, `compareAndSwap`, `keys`.
 * A plugin opens only the buckets `stores` grants it in optech.toml; in Node
 * the store is in memory.
 *
 * @module
 */
import { backend } from "#backend";

import type { Level } from "./backend/types.js";

export type { Data, Fields } from "./data.js";
export {
  FetchError,
  type FetchFailure,
  InvalidInput,
  StoreError,
  type StoreFailure,
} from "./errors.js";
export { type Handle, type HandleError, handler } from "./handler.js";
export { Inputs, type Request } from "./request.js";
export { type Bucket, type SetOptions, store } from "./store.js";
export type { Level };

/**
 * A value from this plugin's `[plugins.<name>.config]` table in `optech.toml`,
 * or `undefined` if it has none. A value written `{ env = "NAME" }` arrives
 * resolved: the secret itself. In unit tests, values come from `run`'s `config`.
 */
export function config(name: string): string | undefined {
  return backend.config(name);
}

/** One line in the host's log, tagged with the plugin and the request. */
function line(level: Level): (message: string) => void {
  return (message: string) => backend.log(level, String(message));
}

/**
 * Lines in the host's log, tagged with the plugin and the request, at the
 * host's levels (`OPTECH_LOG` filters them). In unit tests, `run` collects them.
 */
export const log: {
  readonly trace: (message: string) => void;
  readonly debug: (message: string) => void;
  readonly info: (message: string) => void;
  readonly warn: (message: string) => void;
  readonly error: (message: string) => void;
} = Object.freeze({
  trace: line("trace"),
  debug: line("debug"),
  info: line("info"),
  warn: line("warn"),
  error: line("error"),
});
