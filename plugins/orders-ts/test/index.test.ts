// The handler's unit tests, in Node: `npm test`. No WebAssembly, no host: `run`
// calls the handler as the host would, with a stand-in for the back end.
import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";

import { store as kv } from "optech-sdk";
import { run, store } from "optech-sdk/testing";

import {
  basicAuthorization,
  formEncode,
  handle,
  keepFor,
  orderData,
  tokenFrom,
} from "../src/index.ts";

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

// The client-credentials grant: the token comes from `token_url` and is kept in
// the store's `tokens` bucket, which outlives each `run` as the host's does.

const oauth = {
  base_url: "http://orders.test",
  token_url: "http://auth.test/oauth/token",
  client_id: "optech",
  client_secret: "s3cret",
};

beforeEach(() => {
  store.reset();
  store.grant("tokens"); // as `stores = ["tokens"]`
});

/**
 * A token endpoint that issues `tok-1`, `tok-2`... living `expiresIn` seconds
 * (unsaid if undefined), and an orders API that takes the tokens in `live`.
 * Notes the Basic headers of token requests and the bearer of order requests.
 */
function oauthBackEnd(expiresIn: number | undefined) {
  const issued: string[] = [];
  const basics: Array<string | null> = [];
  const bearers: Array<string | null> = [];
  const live = new Set<string>();
  const fetch: typeof globalThis.fetch = async (input, init) => {
    const headers = new Headers(init?.headers);
    if (String(input) === oauth.token_url) {
      assert.equal(init?.method, "POST");
      assert.equal(headers.get("content-type"), "application/x-www-form-urlencoded");
      assert.equal(init?.body, "grant_type=client_credentials");
      basics.push(headers.get("authorization"));
      const token = `tok-${issued.length + 1}`;
      issued.push(token);
      live.add(token);
      return Response.json({ access_token: token, token_type: "Bearer", expires_in: expiresIn });
    }
    const auth = headers.get("authorization");
    bearers.push(auth);
    if (!live.has(auth?.replace(/^Bearer /, "") ?? "")) {
      return Response.json({ error: "invalid_token" }, { status: 401 });
    }
    return Response.json({ status: "shipped", auth });
  };
  return { fetch, issued, basics, bearers, live };
}

/** Asks for order A-17, as the host would. */
function orderA17(config: Record<string, string>, fetch: typeof globalThis.fetch) {
  return run(handle, { inputs: { order_id: "A-17" }, config, fetch });
}

test("one token serves every request until the store's clock passes its time to live", async () => {
  const api = oauthBackEnd(60); // kept 54 s, a tenth less
  for (let i = 0; i < 5; i++) {
    const out = await orderA17(oauth, api.fetch);
    assert.deepEqual([out.status, out.data?.auth], [200, "Bearer tok-1"]);
  }
  assert.deepEqual(api.issued, ["tok-1"]);
  assert.equal(kv.open("tokens").get("orders-api"), "tok-1");

  store.advance(53);
  await orderA17(oauth, api.fetch);
  assert.deepEqual(api.issued, ["tok-1"]);

  store.advance(1);
  const out = await orderA17(oauth, api.fetch);
  assert.deepEqual([out.status, out.data?.auth], [200, "Bearer tok-2"]);
  assert.deepEqual(api.issued, ["tok-1", "tok-2"]);
  assert.equal(kv.open("tokens").get("orders-api"), "tok-2");
});

test('token_cache = "off" fetches a token for every request and keeps none', async () => {
  const api = oauthBackEnd(60);
  const config = { ...oauth, token_cache: "off" };
  for (let i = 0; i < 3; i++) {
    const out = await orderA17(config, api.fetch);
    assert.equal(out.status, 200);
  }
  assert.deepEqual(api.issued, ["tok-1", "tok-2", "tok-3"]);
  assert.equal(kv.open("tokens").get("orders-api"), null);
});

test("a token that does not say how long it lives, or lives under 2 s, is not kept", async () => {
  for (const expiresIn of [undefined, 1]) {
    store.reset();
    const api = oauthBackEnd(expiresIn);
    await orderA17(oauth, api.fetch);
    await orderA17(oauth, api.fetch);
    assert.deepEqual(api.issued, ["tok-1", "tok-2"], `expires_in ${expiresIn}`);
    assert.equal(kv.open("tokens").get("orders-api"), null);
  }
});

test("a 401 drops the cached token, fetches one new token and tries once more", async () => {
  kv.open("tokens").set("orders-api", "revoked", { ttl: 600 });
  const api = oauthBackEnd(60);
  const out = await orderA17(oauth, api.fetch);
  assert.deepEqual([out.status, out.data?.auth], [200, "Bearer tok-1"]);
  assert.deepEqual(api.bearers, ["Bearer revoked", "Bearer tok-1"]);
  assert.deepEqual(api.issued, ["tok-1"]);
  assert.equal(kv.open("tokens").get("orders-api"), "tok-1");
});

test("a second 401 is the back end's answer: no third try", async () => {
  const api = oauthBackEnd(60);
  const refusing: typeof fetch = async (input, init) => {
    api.live.clear(); // every token is refused
    return api.fetch(input, init);
  };
  const out = await orderA17(oauth, refusing);
  assert.deepEqual([out.status, out.error?.message], [500, "the orders back end answered 401"]);
  assert.deepEqual(api.issued, ["tok-1", "tok-2"]);
  assert.deepEqual(api.bearers, ["Bearer tok-1", "Bearer tok-2"]);
});

test("with a fixed token a 401 is not retried", async () => {
  const seen: string[] = [];
  const refusing: typeof fetch = async (input) => {
    seen.push(String(input));
    return new Response("", { status: 401 });
  };
  const out = await orderA17(config, refusing);
  assert.deepEqual([out.status, out.error?.message], [500, "the orders back end answered 401"]);
  assert.deepEqual(seen, ["http://orders.test/orders/A-17"]);
});

test("the Basic header form-encodes id and secret before base64 (RFC 6749, 2.3.1)", async () => {
  assert.equal(basicAuthorization("optech", "s3cret"), "Basic b3B0ZWNoOnMzY3JldA==");
  assert.equal(formEncode("a b:c/é"), "a+b%3Ac%2F%C3%A9");
  assert.equal(formEncode("A-z_0.9*~!'()%+"), "A-z_0.9*%7E%21%27%28%29%25%2B");

  const api = oauthBackEnd(60);
  const config = { ...oauth, client_id: "my client", client_secret: "p@ss:wörd" };
  await orderA17(config, api.fetch);
  const expected = Buffer.from("my+client:p%40ss%3Aw%C3%B6rd").toString("base64");
  assert.deepEqual(api.basics, [`Basic ${expected}`]);
});

test("a token endpoint's refusal or incomplete config fails: 500", async () => {
  const refusing: typeof fetch = async () =>
    Response.json({ error: "invalid_client" }, { status: 401 });
  let out = await orderA17(oauth, refusing);
  assert.deepEqual([out.status, out.error?.message], [500, "the token endpoint answered 401"]);

  const { client_secret: _, ...noSecret } = oauth;
  out = await orderA17(noSecret, refusing);
  assert.deepEqual(
    [out.status, out.error?.message],
    [500, "token_url is set but client_secret is not"],
  );
});

test("without `tokens` in `stores` the plugin fails with the store's message", async () => {
  store.grant("other");
  const out = await orderA17(oauth, oauthBackEnd(60).fetch);
  assert.equal(out.status, 500);
  assert.match(out.error?.message ?? "", /bucket `tokens` is not granted/);
});

test("a token is kept a tenth less than it lives", () => {
  assert.equal(keepFor(3600), 3240);
  assert.equal(keepFor(2), 2);
  assert.equal(keepFor(1), undefined);
  assert.equal(keepFor(undefined), undefined);
  const answer = '{"access_token":"abc","token_type":"Bearer","expires_in":60}';
  assert.deepEqual(tokenFrom(answer), { token: "abc", lifetime: 60 });
  assert.deepEqual(tokenFrom('{"access_token":"abc","expires_in":"60"}'), { token: "abc" });
  assert.throws(() => tokenFrom('{"error":"invalid_client"}'), /no access_token/);
  assert.throws(() => tokenFrom("null"), /no access_token/);
  assert.throws(() => tokenFrom("<html>"), /not JSON/);
});
