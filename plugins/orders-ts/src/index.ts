// Answers "order status" from a REST back end: GET {base_url}/orders/{id} with a
// bearer token, and the order's fields as data. The TypeScript twin of
// plugins/orders (Rust).
//
// The host lets it reach only the hosts in its `allowed_hosts`, and the secrets
// come from the environment, not the config file. The token is either fixed
// (`token`) or, with `token_url`, an OAuth 2 access token from the
// client-credentials grant, kept in the `tokens` bucket of the host's store
// until shortly before it expires: one token request serves every request until
// then, across instances and replicas, instead of one token request per data
// request.
//
//   [plugins.orders-ts]
//   allowed_hosts = ["https://api.example.com", "https://auth.example.com"]
//   stores = ["tokens"]
//
//   [plugins.orders-ts.config]
//   base_url = "https://api.example.com"
//   token_url = "https://auth.example.com/oauth/token"
//   client_id = "optech"
//   client_secret = { env = "ORDERS_CLIENT_SECRET" }
import { InvalidInput, config, handler, log, store } from "optech-sdk";

/** Where the access token is kept, and under which key. */
const TOKEN_BUCKET = "tokens";
const TOKEN_KEY = "orders-api";

export const handle = handler(async (req) => {
  const id = req.inputs.require("order_id"); // absent: InvalidInput, answered 400
  if (!/^[A-Za-z0-9_-]+$/.test(id)) {
    throw new InvalidInput(`\`order_id\` ${JSON.stringify(id)} is not an order id`);
  }
  const base = config("base_url");
  if (!base) throw new Error("base_url is not set"); // any other throw: 500 plugin_error
  const url = `${base.replace(/\/+$/, "")}/orders/${id}`;
  const credentials = credentialsFromConfig();
  let res = await getOrder(url, await token(credentials));
  if (res.status === 401 && credentials.kind === "client") {
    // Revoked or expired early: one new token, one more try.
    forget(credentials);
    res = await getOrder(url, await token(credentials));
  }
  if (res.status === 404) throw new InvalidInput(`no order ${id}`);
  if (!res.ok) throw new Error(`the orders back end answered ${res.status}`);
  log.info(`order ${id} found`);
  return orderData(id, await res.text());
});

function getOrder(url: string, token: string): Promise<Response> {
  return fetch(url, {
    headers: { authorization: `Bearer ${token}`, accept: "application/json" },
  });
}

/** How the plugin gets its bearer token. */
type Credentials =
  /** `token` in the config, used as it is. */
  | { kind: "fixed"; token: string }
  /**
   * The client-credentials grant at `token_url`; `cached` unless the config
   * says `token_cache = "off"` (the benchmark's comparison).
   */
  | { kind: "client"; tokenUrl: string; clientId: string; clientSecret: string; cached: boolean };

function credentialsFromConfig(): Credentials {
  const tokenUrl = config("token_url");
  if (tokenUrl === undefined) return { kind: "fixed", token: config("token") ?? "" };
  const need = (name: string): string => {
    const value = config(name);
    if (value === undefined) throw new Error(`token_url is set but ${name} is not`);
    return value;
  };
  return {
    kind: "client",
    tokenUrl,
    clientId: need("client_id"),
    clientSecret: need("client_secret"),
    cached: config("token_cache") !== "off",
  };
}

/** The token to send: the cached one while it lasts, else a new one. */
async function token(credentials: Credentials): Promise<string> {
  if (credentials.kind === "fixed") return credentials.token;
  const { tokenUrl, clientId, clientSecret, cached } = credentials;
  if (cached) {
    const kept = store.open(TOKEN_BUCKET).get(TOKEN_KEY);
    if (kept !== null) return kept;
  }
  const { token, lifetime } = await fetchToken(tokenUrl, clientId, clientSecret);
  const ttl = keepFor(lifetime);
  if (cached && ttl !== undefined) store.open(TOKEN_BUCKET).set(TOKEN_KEY, token, { ttl });
  return token;
}

function forget(credentials: Credentials): void {
  if (credentials.kind === "client" && credentials.cached) {
    store.open(TOKEN_BUCKET).delete(TOKEN_KEY);
  }
}

/**
 * `POST token_url` with `grant_type=client_credentials`, the client
 * authenticated with HTTP Basic (RFC 6749, 2.3.1 and 4.4): the token and how
 * long it lives, if the server says.
 */
async function fetchToken(
  tokenUrl: string,
  clientId: string,
  clientSecret: string,
): Promise<{ token: string; lifetime?: number }> {
  const res = await fetch(tokenUrl, {
    method: "POST",
    headers: {
      authorization: basicAuthorization(clientId, clientSecret),
      "content-type": "application/x-www-form-urlencoded",
      accept: "application/json",
    },
    body: "grant_type=client_credentials",
  });
  if (res.status !== 200) throw new Error(`the token endpoint answered ${res.status}`);
  log.debug("fetched a new access token");
  return tokenFrom(await res.text());
}

/** The access token and its lifetime in seconds from a token response. */
export function tokenFrom(body: string): { token: string; lifetime?: number } {
  let answer: unknown;
  try {
    answer = JSON.parse(body);
  } catch (e) {
    throw new Error(`the token endpoint's answer is not JSON: ${(e as Error).message}`);
  }
  const { access_token: token, expires_in: lifetime } =
    typeof answer === "object" && answer !== null
      ? (answer as { access_token?: unknown; expires_in?: unknown })
      : {};
  if (typeof token !== "string" || token === "") {
    throw new Error("the token endpoint's answer has no access_token");
  }
  return Number.isSafeInteger(lifetime) && (lifetime as number) >= 0
    ? { token, lifetime: lifetime as number }
    : { token };
}

/**
 * How long to keep a token that lives `lifetime` seconds: a tenth less, so it
 * is renewed before the back end refuses it; not at all if it lives under two
 * seconds or does not say.
 */
export function keepFor(lifetime: number | undefined): number | undefined {
  if (lifetime === undefined || lifetime < 2) return undefined;
  return lifetime - Math.floor(lifetime / 10);
}

/**
 * The `authorization` header of a client: `Basic` and base64 of id and secret,
 * each `application/x-www-form-urlencoded` first (RFC 6749, 2.3.1).
 */
export function basicAuthorization(clientId: string, clientSecret: string): string {
  // Form-encoded text is ASCII, which is all `btoa` takes.
  return `Basic ${btoa(`${formEncode(clientId)}:${formEncode(clientSecret)}`)}`;
}

/**
 * `application/x-www-form-urlencoded` of UTF-8 text: letters, digits and
 * `*-._` as they are, a space as `+`, any other byte as `%XX`.
 */
export function formEncode(text: string): string {
  return encodeURIComponent(text)
    .replace(/[!'()~]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
    .replace(/%20/g, "+");
}

/** The order's top-level strings, numbers and booleans, as data. */
export function orderData(id: string, body: string): Record<string, string | number | boolean> {
  let order: unknown;
  try {
    order = JSON.parse(body);
  } catch (e) {
    throw new Error(`the back end's answer is not JSON: ${(e as Error).message}`);
  }
  if (typeof order !== "object" || order === null || Array.isArray(order)) {
    throw new Error("the back end's answer is not a JSON object");
  }
  const data: Record<string, string | number | boolean> = { order_id: id };
  for (const [name, value] of Object.entries(order)) {
    if (typeof value === "string" || typeof value === "number" || typeof value === "boolean") {
      data[name] = value;
    }
  }
  return data;
}
