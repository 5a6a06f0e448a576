// `fetch()` inside the host, over wasi:http: the host decides where a request
// may go (allowed_hosts, the SSRF guard), how long it may take (http_timeout,
// the call's deadline) and how large its answer may be (max_http_response).
// The engine's own fetch reports every failure as the same "NetworkError";
// this one says why (FetchError.reason), as the Rust SDK's http module does.
//
// Waiting never blocks the event loop for long: every wait goes through one
// pump that polls all pending requests at once (so `Promise.all` of several
// fetches runs them together), and gives timers a turn every few milliseconds.
import { subscribeDuration } from "wasi:clocks/monotonic-clock@0.2.12";
import { handle as send } from "wasi:http/outgoing-handler@0.2.12";
import {
  type ErrorCode,
  Fields,
  type IncomingResponse,
  type Method,
  OutgoingBody,
  OutgoingRequest,
  httpErrorCode,
} from "wasi:http/types@0.2.12";
import { type Pollable, poll } from "wasi:io/poll@0.2.12";
import type { StreamError } from "wasi:io/streams@0.2.12";

import { FetchError } from "../errors.js";

/** How long one poll may block before timers get a turn. */
const TIMER_TURN_NS = 10_000_000n;
/** wasi:io streams take at most this much per blocking write. */
const WRITE_CHUNK = 4096;
const READ_CHUNK = 64n * 1024n;
/** Statuses whose response has no body (the Response constructor refuses one). */
const NULL_BODY = new Set([101, 103, 204, 205, 304]);

export async function fetch(input: string | URL | Request, init?: RequestInit): Promise<Response> {
  const request = new Request(input, init);
  throwIfAborted(request);
  const url = new URL(request.url);
  const origin = `${url.protocol}//${url.host}`;
  const fail = (reason: FetchError["reason"], why: string) =>
    new FetchError(reason, request.url, `fetch to ${origin}: ${why}`);
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new FetchError("other", request.url, `fetch: ${url.protocol} URLs are not supported, only http: and https:`);
  }
  const body = request.body === null ? null : new Uint8Array(await request.arrayBuffer());

  let headers: Fields;
  try {
    headers = Fields.fromList(
      [...request.headers].map(([name, value]): [string, Uint8Array] => [name, latin1Bytes(value)]),
    );
  } catch (e) {
    throw fail("other", `a header the host does not accept (${describe(e)})`);
  }
  const outgoing = new OutgoingRequest(headers);
  try {
    outgoing.setMethod(method(request.method));
    outgoing.setScheme({ tag: url.protocol === "https:" ? "HTTPS" : "HTTP" });
    outgoing.setAuthority(url.host);
    outgoing.setPathWithQuery(url.pathname + url.search);
  } catch (e) {
    outgoing[Symbol.dispose]();
    throw fail("other", `the host does not accept this request (${describe(e)})`);
  }
  // The body handle must be taken before the request is sent.
  const outgoingBody = body === null ? null : outgoing.body();

  let future;
  try {
    future = send(outgoing, undefined);
  } catch (e) {
    outgoingBody?.[Symbol.dispose]();
    throw codeError(payload(e) as ErrorCode, fail);
  }
  try {
    if (outgoingBody !== null && body !== null) {
      writeBody(outgoingBody, body, fail);
    }
    const pollable = future.subscribe();
    let result;
    try {
      while ((result = future.get()) === undefined) {
        await ready(pollable);
        throwIfAborted(request);
      }
    } finally {
      pollable[Symbol.dispose]();
    }
    if (result.tag === "err") throw fail("other", "the response was taken twice");
    if (result.val.tag === "err") throw codeError(result.val.val, fail);
    return await readResponse(result.val.val, request, fail);
  } finally {
    future[Symbol.dispose]();
  }
}

function writeBody(
  body: OutgoingBody,
  bytes: Uint8Array,
  fail: (reason: FetchError["reason"], why: string) => FetchError,
): void {
  const stream = body.write();
  try {
    for (let at = 0; at < bytes.length; at += WRITE_CHUNK) {
      stream.blockingWriteAndFlush(bytes.subarray(at, at + WRITE_CHUNK));
    }
  } catch (e) {
    throw streamError(payload(e) as StreamError, fail, "sending the request body failed");
  } finally {
    stream[Symbol.dispose]();
  }
  try {
    OutgoingBody.finish(body, undefined);
  } catch (e) {
    throw codeError(payload(e) as ErrorCode, fail);
  }
}

async function readResponse(
  incoming: IncomingResponse,
  request: Request,
  fail: (reason: FetchError["reason"], why: string) => FetchError,
): Promise<Response> {
  try {
    const status = incoming.status();
    const fields = incoming.headers();
    const headers = new Headers();
    try {
      for (const [name, value] of fields.entries()) {
        headers.append(name, latin1Text(value));
      }
    } finally {
      fields[Symbol.dispose]();
    }
    const bytes = await readBody(incoming, request, fail);
    let response: Response;
    try {
      response = new Response(NULL_BODY.has(status) ? null : bytes, { status, headers });
    } catch (e) {
      throw fail("other", `the back end's answer cannot be a Response (${describe(e)})`);
    }
    Object.defineProperty(response, "url", { value: request.url });
    return response;
  } finally {
    incoming[Symbol.dispose]();
  }
}

async function readBody(
  incoming: IncomingResponse,
  request: Request,
  fail: (reason: FetchError["reason"], why: string) => FetchError,
): Promise<Uint8Array> {
  const body = incoming.consume();
  const stream = body.stream();
  const pollable = stream.subscribe();
  const chunks: Uint8Array[] = [];
  let length = 0;
  try {
    for (;;) {
      let chunk: Uint8Array;
      try {
        chunk = stream.read(READ_CHUNK);
      } catch (e) {
        const error = payload(e) as StreamError;
        if (error.tag === "closed") break;
        throw streamError(error, fail, "reading the response failed");
      }
      if (chunk.length === 0) {
        await ready(pollable);
        throwIfAborted(request);
        continue;
      }
      chunks.push(chunk);
      length += chunk.length;
    }
  } finally {
    pollable[Symbol.dispose]();
    stream[Symbol.dispose]();
    body[Symbol.dispose]();
  }
  const bytes = new Uint8Array(length);
  let at = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, at);
    at += chunk.length;
  }
  return bytes;
}

/** Why there is no response, from wasi:http's error code, worded as the Rust SDK words it. */
function codeError(
  code: ErrorCode,
  fail: (reason: FetchError["reason"], why: string) => FetchError,
): FetchError {
  switch (code?.tag) {
    case "HTTP-request-denied":
    case "destination-IP-prohibited":
      return fail("denied", "denied by allowed_hosts (the host does not allow requests there)");
    case "connection-timeout":
    case "connection-read-timeout":
    case "connection-write-timeout":
    case "HTTP-response-timeout":
    case "DNS-timeout":
      return fail("timeout", "timed out");
    case "HTTP-response-body-size":
      return fail("too-large", "the response is larger than max_http_response");
    case "connection-refused":
      return fail("connect", "the connection was refused");
    case "destination-not-found":
    case "DNS-error":
      return fail("connect", "the host was not found");
    case "destination-unavailable":
    case "destination-IP-unroutable":
    case "connection-terminated":
    case "TLS-protocol-error":
    case "TLS-certificate-error":
    case "TLS-alert-received":
      return fail("connect", `cannot connect (${code.tag})`);
    default:
      return fail("other", `the request failed (${code?.tag ?? describe(code)})`);
  }
}

function streamError(
  error: StreamError,
  fail: (reason: FetchError["reason"], why: string) => FetchError,
  what: string,
): FetchError {
  if (error.tag !== "last-operation-failed") return fail("other", what);
  const code = httpErrorCode(error.val);
  const text = code === undefined ? error.val.toDebugString() : "";
  error.val[Symbol.dispose]();
  return code === undefined ? fail("other", `${what}: ${text}`) : codeError(code, fail);
}

const METHODS = new Set(["get", "head", "post", "put", "delete", "connect", "options", "trace", "patch"]);

function method(name: string): Method {
  const lower = name.toLowerCase();
  return METHODS.has(lower) ? ({ tag: lower } as Method) : { tag: "other", val: name };
}

function throwIfAborted(request: Request): void {
  if (request.signal?.aborted) {
    throw request.signal.reason ?? new DOMException("The operation was aborted.", "AbortError");
  }
}

/** What a wasi function threw: its `result`'s error, possibly wrapped. */
function payload(e: unknown): unknown {
  return typeof e === "object" && e !== null && "payload" in e ? (e as { payload: unknown }).payload : e;
}

function describe(e: unknown): string {
  if (e instanceof Error) return e.message;
  try {
    return JSON.stringify(payload(e));
  } catch {
    return String(e);
  }
}

/** Header values are bytes; a `Headers` value is a byte string. */
function latin1Bytes(text: string): Uint8Array {
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i) & 0xff;
  return bytes;
}

function latin1Text(bytes: Uint8Array): string {
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return text;
}

// One pump polls every pending wait at once.
const waiting: Array<{ pollable: Pollable; wake: () => void }> = [];
let pumping = false;

/** Resolves when `pollable` is ready. */
function ready(pollable: Pollable): Promise<void> {
  return new Promise((wake) => {
    waiting.push({ pollable, wake });
    if (!pumping) {
      pumping = true;
      setTimeout(pump, 0);
    }
  });
}

function pump(): void {
  const turn = subscribeDuration(TIMER_TURN_NS);
  try {
    const ready = poll([...waiting.map((w) => w.pollable), turn]);
    // Highest index first, so removing one does not shift the others.
    for (const index of [...ready].sort((a, b) => b - a)) {
      if (index < waiting.length) {
        const [done] = waiting.splice(index, 1);
        done.wake();
      }
    }
  } finally {
    turn[Symbol.dispose]();
  }
  if (waiting.length > 0) {
    setTimeout(pump, 0);
  } else {
    pumping = false;
  }
}
