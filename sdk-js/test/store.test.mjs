// The key-value store in Node: the double a handler's unit tests run against,
// with the host's semantics.
import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";

import { StoreError, handler, store } from "optech-sdk";
import { run, store as testStore } from "optech-sdk/testing";

beforeEach(() => testStore.reset());

const isStoreError = (kind, message) => (e) =>
  e instanceof StoreError && e.kind === kind && (message === undefined || message.test(e.message));

test("get, set, exists, delete: text as UTF-8, bytes as they are, absent as null", () => {
  const b = store.open("things");
  assert.equal(b.name, "things");
  assert.equal(b.get("k"), null);
  assert.equal(b.getBytes("k"), null);
  assert.equal(b.exists("k"), false);
  b.set("k", "héllo ✓");
  assert.equal(b.get("k"), "héllo ✓");
  assert.deepEqual(b.getBytes("k"), new TextEncoder().encode("héllo ✓"));
  assert.equal(b.exists("k"), true);
  b.setBytes("raw", new Uint8Array([0, 255, 1]));
  assert.deepEqual(b.getBytes("raw"), new Uint8Array([0, 255, 1]));
  assert.throws(() => b.get("raw"), (e) => e instanceof TypeError && /not UTF-8 text: read it with getBytes/.test(e.message));
  b.delete("k");
  b.delete("never-there");
  assert.equal(b.get("k"), null);
  assert.equal(b.exists("k"), false);
});

test("the store outlives a run and buckets are separate", async () => {
  const handle = handler((req) => {
    const seen = store.open("counters").increment(`seen:${req.inputs.require("user")}`);
    return { seen };
  });
  assert.deepEqual((await run(handle, { inputs: { user: "ada" } })).data, { seen: "1" });
  assert.deepEqual((await run(handle, { inputs: { user: "ada" } })).data, { seen: "2" });
  assert.deepEqual((await run(handle, { inputs: { user: "bob" } })).data, { seen: "1" });
  assert.equal(store.open("counters").get("seen:ada"), "2");
  assert.equal(store.open("other").get("seen:ada"), null);
});

test("increment: absent is 0, the sum is decimal text, by may be negative; other values refuse", () => {
  const b = store.open("counters");
  assert.equal(b.increment("n"), 1);
  assert.equal(b.increment("n", 4), 5);
  assert.equal(b.get("n"), "5");
  assert.equal(b.increment("n", -7), -2);
  assert.equal(b.get("n"), "-2");
  b.set("m", "41");
  assert.equal(b.increment("m"), 42);
  b.set("text", "many");
  assert.throws(() => b.increment("text"), isStoreError("other", /^key `text` does not hold a decimal integer/));
  assert.throws(() => b.increment("n", 1.5), RangeError);
  b.set("big", "9223372036854775807");
  assert.throws(() => b.increment("big"), isStoreError("other", /overflows a 64-bit integer/));
});

test("a ttl expires the key; increment keeps it; a plain set drops it; ttl must be whole seconds >= 1", () => {
  const b = store.open("cache");
  b.set("token", "t0k", { ttl: 60 });
  b.set("forever", "x");
  b.increment("hits", 1);
  b.setBytes("hits", new TextEncoder().encode("1"), { ttl: 10 });
  assert.equal(b.increment("hits"), 2);
  testStore.advance(59);
  assert.equal(b.get("token"), "t0k");
  assert.equal(b.get("hits"), null, "increment kept the 10 s ttl");
  testStore.advance(1);
  assert.equal(b.get("token"), null);
  assert.equal(b.exists("token"), false);
  assert.deepEqual(b.keys(), ["forever"]);
  assert.equal(b.get("forever"), "x");

  b.set("k", "v", { ttl: 5 });
  b.set("k", "v");
  testStore.advance(10);
  assert.equal(b.get("k"), "v");

  for (const ttl of [0, -1, 1.5, Number.NaN]) {
    assert.throws(() => b.set("k", "v", { ttl }), RangeError, String(ttl));
  }
});

test("keys: every page, by prefix, in byte order, expired ones left out", () => {
  const b = store.open("keys");
  for (const key of ["b", "a/2", "a/10", "a/1", "ab", "\u{1F600}", "\uFFFD"]) b.set(key, "v");
  // Byte order (UTF-8): U+FFFD before U+1F600, which UTF-16 order gets wrong.
  assert.deepEqual(b.keys(), ["a/1", "a/10", "a/2", "ab", "b", "\uFFFD", "\u{1F600}"]);
  assert.deepEqual(b.keys("a/"), ["a/1", "a/10", "a/2"]);
  assert.deepEqual(b.keys("zz"), []);
  const many = store.open("many");
  const expected = [];
  for (let i = 0; i < 2500; i++) {
    const key = `k${String(i).padStart(5, "0")}`;
    many.set(key, "v");
    expected.push(key);
  }
  assert.deepEqual(many.keys(), expected);
  assert.deepEqual(many.keys("k0249"), expected.slice(2490, 2500));
});

test("compareAndSwap: null is absent, a changed value refuses, bytes too", () => {
  const b = store.open("cas");
  assert.equal(b.compareAndSwap("k", "x", "1"), false);
  assert.equal(b.get("k"), null);
  assert.equal(b.compareAndSwap("k", null, "1"), true);
  assert.equal(b.compareAndSwap("k", null, "2"), false);
  assert.equal(b.compareAndSwap("k", "1", "2"), true);
  assert.equal(b.get("k"), "2");
  assert.equal(b.compareAndSwap("k", "1", "3"), false);
  assert.equal(b.get("k"), "2");
  assert.equal(b.compareAndSwapBytes("k", new TextEncoder().encode("2"), new Uint8Array([7])), true);
  assert.deepEqual(b.getBytes("k"), new Uint8Array([7]));
  // An expired value is absent.
  b.set("t", "old", { ttl: 1 });
  testStore.advance(1);
  assert.equal(b.compareAndSwap("t", "old", "new"), false);
  assert.equal(b.compareAndSwap("t", null, "new"), true);
});

test("a bucket not granted is access-denied, naming the fix; the grant may come after open", async () => {
  const counters = store.open("counters");
  const secrets = store.open("secrets");
  testStore.grant("counters");
  counters.set("k", "v");
  const denied = (e) =>
    isStoreError("access-denied")(e) &&
    e.bucket === "secrets" &&
    e.message ===
      "bucket `secrets` is not granted to this plugin: add it to `stores` in its [plugins.NAME] table of optech.toml";
  assert.throws(() => secrets.get("k"), denied);
  assert.throws(() => secrets.set("k", "v"), denied);
  assert.throws(() => store.open("secrets").keys(), denied);
  const out = await run(handler(() => ({ v: store.open("secrets").get("k") })));
  assert.equal(out.status, 500);
  assert.match(out.error.message, /^bucket `secrets` is not granted to this plugin/);
  testStore.reset();
  assert.equal(secrets.get("k"), null);
});

test("a store that is down fails every call with its message, until it is back", async () => {
  const b = store.open("counters");
  testStore.fail("the store is unavailable: disk full");
  assert.throws(() => b.increment("n"), isStoreError("other", /^the store is unavailable: disk full$/));
  const out = await run(handler(() => ({ n: store.open("counters").increment("n") })));
  assert.deepEqual([out.status, out.error.message], [500, "the store is unavailable: disk full"]);
  testStore.fail(undefined);
  assert.equal(b.increment("n"), 1);
});

test("the host's key limits: not empty, at most 1024 bytes; values at most 1 MiB", () => {
  const b = store.open("limits");
  assert.throws(() => b.set("", "v"), isStoreError("other", /^a key must not be empty$/));
  assert.throws(() => b.get(""), isStoreError("other"));
  assert.throws(() => b.set("k".repeat(1025), "v"), isStoreError("other", /store\.max_key_size/));
  b.set("k".repeat(1024), "v");
  assert.throws(() => b.setBytes("v", new Uint8Array(1024 * 1024 + 1)), isStoreError("other", /store\.max_value_size/));
});

test("store.open takes a name; StoreError is an Error with kind and bucket", () => {
  assert.throws(() => store.open(""), TypeError);
  const e = new StoreError("other", "b", "m");
  assert.ok(e instanceof Error);
  assert.deepEqual([e.name, e.kind, e.bucket, e.message], ["StoreError", "other", "b", "m"]);
});
