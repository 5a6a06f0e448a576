// Test-only plugin: the request's key selects a behaviour (host/tests/js.rs);
// in "async:echo", what follows the last ":" does, so several plugin entries
// (modes, limits) can share the behaviours.
import {
  type Data,
  FetchError,
  InvalidInput,
  type Request,
  StoreError,
  config,
  handler,
  log,
  store,
} from "optech-sdk";
import { marks } from "./marks.js";

/** Where the plugin's back end is, from its config. */
function backEnd(path: string): string {
  const base = config("base_url");
  if (!base) throw new Error("base_url is not set");
  return `${base}${path}`;
}

// The behaviours that need no waiting answer synchronously (the SDK's sync
// path: no promise, no event loop); the others are async.
export const handle = handler((req) => {
  const behaviour = req.key.slice(req.key.lastIndexOf(":") + 1);
  switch (behaviour) {
    case "echo":
      return { key: req.key, ...Object.fromEntries(req.inputs) };
    case "data":
      return { text: "as is", number: 12, yes: true, list: [1, "two"], nothing: null, gone: undefined };
    case "require":
      return { id: req.inputs.require("order_id") };
    case "invalid":
      throw new InvalidInput(`no order ${req.inputs.get("order_id") ?? "?"}`);
    case "throw":
      throw new Error("the back end is on fire");
    case "config":
      log.info(`config asked for ${req.inputs.get("name")}`);
      console.log("a console.log line");
      return { value: config(req.inputs.require("name")) ?? "(unset)" };
    case "loop":
      for (;;) {
        // Spins until the host's deadline stops it.
      }
    case "alloc": {
      const big = new Uint8Array(1 << 30);
      big[big.length - 1] = 1;
      return { length: big.length };
    }
    case "marks":
      return marks(req.inputs);
    case "kv":
      return kv(req.inputs.require("bucket"));
    default:
      return waiting(req, behaviour);
  }
});

/** Every store call once, on `bucket`, through the host's wasi:keyvalue. */
function kv(name: string): Data {
  const b = store.open(name);
  try {
    b.set("token", "abc", { ttl: 60 });
    const token = b.get("token");
    const missing = b.get("missing");
    const count = b.increment("count", 2);
    const swapped = b.compareAndSwap("leader", null, "me");
    const lost = b.compareAndSwap("leader", null, "you");
    b.setBytes("raw", new Uint8Array([0, 255]));
    const raw = Array.from(b.getBytes("raw") ?? []).join(",");
    b.delete("raw");
    return {
      token,
      missing,
      count,
      swapped,
      lost,
      raw,
      gone: !b.exists("raw"),
      keys: b.keys().join(","),
    };
  } catch (e) {
    if (e instanceof StoreError) return { error: e.message };
    throw e;
  }
}

async function waiting(req: Request, behaviour: string): Promise<Data> {
  switch (behaviour) {
    case "async-invalid":
      await Promise.resolve();
      throw new InvalidInput("no order, after a wait");
    case "async-echo":
      await Promise.resolve();
      return { key: req.key, ...Object.fromEntries(req.inputs) };
    case "fetch": {
      const res = await fetch(backEnd(req.inputs.get("path") ?? "/"), {
        headers: { authorization: `Bearer ${config("token") ?? ""}` },
      });
      return { status: res.status, body: await res.text() };
    }
    case "fetch-url": {
      // A FetchError uncaught: the plugin's error, answered 500 with its message.
      const res = await fetch(req.inputs.require("url"));
      return { status: res.status };
    }
    case "probe": {
      try {
        const res = await fetch(req.inputs.require("url"));
        return { status: res.status };
      } catch (e) {
        if (e instanceof FetchError) return { reason: e.reason, message: e.message };
        throw e;
      }
    }
    case "post": {
      const size = Number(req.inputs.get("size") ?? "10000");
      const payload = JSON.stringify({ fill: "x".repeat(size) });
      const res = await fetch(backEnd("/echo-body"), {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: payload,
      });
      const echoed = await res.text();
      return { status: res.status, sent: payload.length, same: echoed === payload };
    }
    case "parallel": {
      // Three requests at once (the back end answers when all three are in),
      // and a timer that fires while they wait.
      let ticked = false;
      setTimeout(() => { ticked = true; }, 1);
      const bodies = await Promise.all(
        [1, 2, 3].map(async () => (await fetch(backEnd("/together"))).text()),
      );
      return { bodies: bodies.join(","), ticked };
    }
    case "never":
      return await new Promise<never>(() => {});
    default:
      throw new InvalidInput(`jskit has no behaviour for key ${req.key}`);
  }
}
