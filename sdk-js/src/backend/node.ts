// The SDK in Node, for a handler's unit tests: config and log lines belong to
// the `testing.run` the code is part of; outside one, config is empty and log
// lines go to stderr. The key-value store is in memory (memory.ts), one for
// the process, as the host's outlives an instance.
import { current } from "../context.js";
import { openBucket } from "./memory.js";
import type { Backend, Level } from "./types.js";

export const backend: Backend = {
  config(name: string): string | undefined {
    return current.getStore()?.config.get(name);
  },
  log(level: Level, message: string): void {
    const run = current.getStore();
    if (run) {
      run.logs.push({ level, message });
    } else {
      process.stderr.write(`[${level}] ${message}\n`);
    }
  },
  keepAlive(): () => void {
    // Node waits for pending work by itself.
    return () => {};
  },
  openBucket,
};
