// The SDK in Node: what a handler's unit tests (and so plugin authors) rely on.
import assert from "node:assert/strict";
import { test } from "node:test";

import { FetchError, InvalidInput, Inputs, config, handler, log } from "optech-sdk";
import { run } from "optech-sdk/testing";

test("inputs keep request order, the last of a repeated name wins, require names what is missing", () => {
  const inputs = new Inputs([["b", "1"], ["a", "2"], ["b", "3"]]);
  assert.deepEqual([...inputs.entries()], [["b", "3"], ["a", "2"]]);
  assert.equal(inputs.get("a"), "2");
  assert.equal(inputs.get("zz"), undefined);
  assert.equal(inputs.has("a"), true);
  assert.equal(inputs.size, 2);
  assert.throws(() => inputs.require("order_id"), (e) => e instanceof InvalidInput && /`order_id`/.test(e.message));
});

test("data: strings as they are, anything else as its JSON text, undefined left out", async () => {
  const handle = handler(() => ({
    s: "text", t: true, n: 12, f: 1.5, o: { a: [1, "x"] }, nul: null, big: 10n ** 20n, gone: undefined,
  }));
  const out = await run(handle);
  assert.equal(out.status, 200);
  assert.deepEqual(out.data, {
    s: "text", t: "true", n: "12", f: "1.5", o: '{"a":[1,"x"]}', nul: "null", big: "100000000000000000000",
  });
  // Order is kept on the wire.
  assert.deepEqual(Object.keys(out.data), ["s", "t", "n", "f", "o", "nul", "big"]);
});

test("a Map is data too, in its order", async () => {
  const out = await run(handler(() => new Map([["z", 1], ["a", "b"]])));
  assert.deepEqual(Object.entries(out.data), [["z", "1"], ["a", "b"]]);
});

test("sync and async handlers, key and inputs", async () => {
  const sync = handler((req) => ({ key: req.key, name: req.inputs.require("name") }));
  const slow = handler(async (req) => {
    await new Promise((r) => setTimeout(r, 5));
    return { key: req.key, all: JSON.stringify([...req.inputs]) };
  });
  assert.deepEqual((await run(sync, { key: "k1", inputs: { name: "Ada" } })).data, { key: "k1", name: "Ada" });
  assert.deepEqual((await run(slow, { key: "k2", inputs: [["x", "1"], ["y", "2"]] })).data, {
    key: "k2",
    all: '[["x","1"],["y","2"]]',
  });
});

test("InvalidInput is a 400 with its message, any other throw a 500 with its message", async () => {
  const missing = await run(handler((req) => ({ id: req.inputs.require("order_id") })));
  assert.equal(missing.status, 400);
  assert.deepEqual(missing.error, { kind: "invalid-input", message: "missing input `order_id`" });

  const invalid = await run(handler(() => { throw new InvalidInput("no order 7"); }));
  assert.deepEqual([invalid.status, invalid.error.message], [400, "no order 7"]);

  const failed = await run(handler(async () => { throw new Error("base_url is not set"); }));
  assert.deepEqual([failed.status, failed.error], [500, { kind: "failed", message: "base_url is not set" }]);

  const text = await run(handler(() => { throw "plain text"; }));
  assert.deepEqual([text.status, text.error.message], [500, "plain text"]);

  const object = await run(handler(() => { throw { code: 7 }; }));
  assert.deepEqual([object.status, object.error.message], [500, '{"code":7}']);
});

test("returning something that is not an object is a 500 that says so", async () => {
  for (const value of ["text", 12, null, undefined, [1, 2]]) {
    const out = await run(handler(() => value));
    assert.equal(out.status, 500, String(value));
    assert.match(out.error.message, /must return an object/);
  }
  const fn = await run(handler(() => ({ f: () => 1 })));
  assert.match(fn.error.message, /`f` is a function/);
});

test("config and log belong to their run, also when runs overlap", async () => {
  const handle = handler(async (req) => {
    log.info(`start ${req.key}`);
    await new Promise((r) => setTimeout(r, req.key === "a" ? 20 : 1));
    log.warn(`end ${req.key}`);
    return { base: config("base_url") ?? "unset" };
  });
  const [a, b] = await Promise.all([
    run(handle, { key: "a", config: { base_url: "http://a" } }),
    run(handle, { key: "b" }),
  ]);
  assert.deepEqual(a.data, { base: "http://a" });
  assert.deepEqual(b.data, { base: "unset" });
  assert.deepEqual(a.logs, [{ level: "info", message: "start a" }, { level: "warn", message: "end a" }]);
  assert.deepEqual(b.logs, [{ level: "info", message: "start b" }, { level: "warn", message: "end b" }]);
  assert.equal(config("base_url"), undefined);
});

test("a run's fetch stand-in answers that run's requests only", async () => {
  const seen = [];
  const backEnd = async (url, init) => {
    seen.push([String(url), new Headers(init?.headers).get("authorization")]);
    return new Response('{"status":"shipped"}', { status: 200 });
  };
  const handle = handler(async (req) => {
    const res = await fetch(`${config("base_url")}/orders/${req.inputs.require("id")}`, {
      headers: { authorization: `Bearer ${config("token")}` },
    });
    return { order: await res.text() };
  });
  const out = await run(handle, { inputs: { id: "A-1" }, config: { base_url: "http://orders", token: "t0k" }, fetch: backEnd });
  assert.deepEqual(out.data, { order: '{"status":"shipped"}' });
  assert.deepEqual(seen, [["http://orders/orders/A-1", "Bearer t0k"]]);
});

test("FetchError is a TypeError with a reason", () => {
  const e = new FetchError("denied", "http://x/", "fetch to http://x: denied by allowed_hosts");
  assert.ok(e instanceof TypeError);
  assert.equal(e.reason, "denied");
  assert.equal(e.name, "FetchError");
});

test("a sync handler answers without a promise; an async one with one; both throw the same errors", async () => {
  const sync = handler((req) => ({ key: req.key }));
  const fields = sync("k", []);
  assert.equal(typeof fields.then, "undefined");
  assert.deepEqual(fields, [["key", "k"]]);
  assert.throws(
    () => handler(() => { throw new InvalidInput("bad"); })("k", []),
    (e) => e.tag === "invalid-input" && e.val === "bad",
  );
  assert.throws(() => handler(() => 12)("k", []), (e) => e.tag === "failed" && /not a number/.test(e.val));
  const later = handler(async () => ({ a: 1 }))("k", []);
  assert.equal(typeof later.then, "function");
  assert.deepEqual(await later, [["a", "1"]]);
  await assert.rejects(
    handler(async () => { throw new InvalidInput("late"); })("k", []),
    (e) => e.tag === "invalid-input" && e.val === "late",
  );
});
