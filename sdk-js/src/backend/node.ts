// The SDK in Node, for a handler's unit tests: config and log lines belong to
// the `testing.run` the code is part of; outside one, config is empty and log
// lines go to stderr.
import { current } from "../context.js";
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
};
