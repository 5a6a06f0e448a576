// The handler's unit tests, in Node: `npm test`. No WebAssembly, no host: `run`
// calls the handler as the host would, with a stand-in for the back end.
import assert from "node:assert/strict";
import { test } from "node:test";

import { run } from "optech-sdk/testing";

import { handle, orderData } from "../src/index.ts";

const config = { base_url: "http://orders.test", token: "t0k" };

/** A back end that knows order A-17, and notes what it was asked. */
function backEnd(seen: string[]): typeof fetch {
  return async (input, init) => {
    seen.push(`${input} ${new Headers(init?.headers).get("authorization")}`);
    return String(input).endsWith("/orders/A-17")
      ? new Response('{"status":"shipped","items":3,"paid":true,"lines":[1]}')
      : new Response("not found", { status: 404 });
  };
}

test("an order's fields become data, fetched with the bearer token", async () => {
  const seen: string[] = [];
  const out = await run(handle, { inputs: { order_id: "A-17" }, config, fetch: backEnd(seen) });
  assert.equal(out.status, 200);
  assert.deepEqual(out.data, { order_id: "A-17", status: "shipped", items: "3", paid: "true" });
  assert.deepEqual(seen, ["http://orders.test/orders/A-17 Bearer t0k"]);
  assert.deepEqual(out.logs, [{ level: "info", message: "order A-17 found" }]);
});

test("an unknown order is the caller's mistake: 400", async () => {
  const out = await run(handle, { inputs: { order_id: "Z-9" }, config, fetch: backEnd([]) });
  assert.deepEqual([out.status, out.error?.message], [400, "no order Z-9"]);
});

test("an id that could leave the orders path is refused before any request", async () => {
  const seen: string[] = [];
  const out = await run(handle, { inputs: { order_id: "../admin" }, config, fetch: backEnd(seen) });
  assert.equal(out.status, 400);
  assert.deepEqual(seen, []);
});

test("without base_url the plugin fails: 500", async () => {
  const out = await run(handle, { inputs: { order_id: "A-17" } });
  assert.deepEqual([out.status, out.error?.message], [500, "base_url is not set"]);
});

test("an answer that is not a JSON object fails", () => {
  assert.throws(() => orderData("A-17", "not json"), /not JSON/);
  assert.throws(() => orderData("A-17", "[1]"), /not a JSON object/);
});
