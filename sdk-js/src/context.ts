import { AsyncLocalStorage } from "node:async_hooks";

import type { Level } from "./backend/types.js";

/** One `testing.run`: the config its handler sees and the lines it logs. */
export interface RunContext {
  config: ReadonlyMap<string, string>;
  logs: Array<{ level: Level; message: string }>;
  fetch?: typeof globalThis.fetch;
}

/** The run a handler's code is part of, in Node; `undefined` outside `testing.run`. */
export const current = new AsyncLocalStorage<RunContext>();
