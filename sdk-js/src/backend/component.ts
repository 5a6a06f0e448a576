// The SDK inside the host: config and log are the host's imports, `fetch`
// is the host's outbound HTTP client (see fetch.ts), and the key-value store
// is wasi:keyvalue with the host's extras (see keyvalue.ts). Only bundles
// built with the `optech-component` condition (`optech build`) load this file.
import { config, log } from "optech:plugin/host@0.1.0";

import { fetch } from "./fetch.js";
import { openBucket } from "./keyvalue.js";
import type { Backend, Level } from "./types.js";

globalThis.fetch = fetch as typeof globalThis.fetch;

/** Far longer than any call's deadline: the host ends the call first. */
const KEEP_ALIVE_MS = 2 ** 30;

export const backend: Backend = {
  config(name: string): string | undefined {
    return config(name);
  },
  log(level: Level, message: string): void {
    log(level, message);
  },
  keepAlive(): () => void {
    // The engine ends a call whose event loop has nothing left to wait for,
    // even if the handler's promise is still pending, and that ends as a crash.
    // A pending timer makes it wait instead, so the host's deadline decides (504).
    const timer = setInterval(() => {}, KEEP_ALIVE_MS);
    return () => clearInterval(timer);
  },
  openBucket,
};
