// The imports of the `js` world (wit/js.wit) as componentize-js presents them
// to JavaScript: kebab-case names in camelCase, u64 as bigint, resources as
// classes with `Symbol.dispose`, a function's `result` error thrown, nested
// results and variants as `{ tag, val }`. Only the parts the SDK uses.

declare module "optech:plugin/host@0.1.0" {
  export function log(level: "trace" | "debug" | "info" | "warn" | "error", message: string): void;
  export function config(name: string): string | undefined;
}

declare module "wasi:io/poll@0.2.12" {
  export class Pollable {
    ready(): boolean;
    block(): void;
    [Symbol.dispose](): void;
  }
  /** The indexes of the pollables that are ready; blocks until one is. */
  export function poll(pollables: Pollable[]): Uint32Array;
}

declare module "wasi:clocks/monotonic-clock@0.2.12" {
  import type { Pollable } from "wasi:io/poll@0.2.12";
  /** A pollable ready after `nanoseconds`. */
  export function subscribeDuration(nanoseconds: bigint): Pollable;
}

declare module "wasi:io/streams@0.2.12" {
  import type { Pollable } from "wasi:io/poll@0.2.12";
  export class IoError {
    toDebugString(): string;
    [Symbol.dispose](): void;
  }
  export type StreamError = { tag: "closed" } | { tag: "last-operation-failed"; val: IoError };
  export class InputStream {
    /** Throws a StreamError; an empty array means "nothing yet". */
    read(len: bigint): Uint8Array;
    subscribe(): Pollable;
    [Symbol.dispose](): void;
  }
  export class OutputStream {
    /** Throws a StreamError. At most 4096 bytes per call. */
    blockingWriteAndFlush(contents: Uint8Array): void;
    [Symbol.dispose](): void;
  }
}

declare module "wasi:http/types@0.2.12" {
  import type { Pollable } from "wasi:io/poll@0.2.12";
  import type { InputStream, IoError, OutputStream } from "wasi:io/streams@0.2.12";

  export type Method =
    | { tag: "get" | "head" | "post" | "put" | "delete" | "connect" | "options" | "trace" | "patch" }
    | { tag: "other"; val: string };
  export type Scheme = { tag: "HTTP" } | { tag: "HTTPS" } | { tag: "other"; val: string };
  /** wasi:http's error-code: only the tag matters to the SDK. */
  export type ErrorCode = { tag: string; val?: unknown };
  export type Result<T, E> = { tag: "ok"; val: T } | { tag: "err"; val: E };

  export class Fields {
    static fromList(entries: Array<[string, Uint8Array]>): Fields;
    entries(): Array<[string, Uint8Array]>;
    [Symbol.dispose](): void;
  }
  export class OutgoingRequest {
    constructor(headers: Fields);
    body(): OutgoingBody;
    setMethod(method: Method): void;
    setPathWithQuery(path: string | undefined): void;
    setScheme(scheme: Scheme | undefined): void;
    setAuthority(authority: string | undefined): void;
    [Symbol.dispose](): void;
  }
  export class OutgoingBody {
    write(): OutputStream;
    static finish(body: OutgoingBody, trailers: Fields | undefined): void;
    [Symbol.dispose](): void;
  }
  export class RequestOptions {
    [Symbol.dispose](): void;
  }
  export class FutureIncomingResponse {
    subscribe(): Pollable;
    get(): Result<Result<IncomingResponse, ErrorCode>, void> | undefined;
    [Symbol.dispose](): void;
  }
  export class IncomingResponse {
    status(): number;
    headers(): Fields;
    consume(): IncomingBody;
    [Symbol.dispose](): void;
  }
  export class IncomingBody {
    stream(): InputStream;
    [Symbol.dispose](): void;
  }
  export function httpErrorCode(err: IoError): ErrorCode | undefined;
}

declare module "wasi:http/outgoing-handler@0.2.12" {
  import type { FutureIncomingResponse, OutgoingRequest, RequestOptions } from "wasi:http/types@0.2.12";
  /** Throws an ErrorCode. */
  export function handle(request: OutgoingRequest, options: RequestOptions | undefined): FutureIncomingResponse;
}

declare module "wasi:keyvalue/store@0.2.0-draft2" {
  export type Error = { tag: "no-such-store" } | { tag: "access-denied" } | { tag: "other"; val: string };
  export interface KeyResponse {
    keys: string[];
    cursor?: string;
  }
  /** Throws an Error. */
  export function open(identifier: string): Bucket;
  /** Every method throws an Error. */
  export class Bucket {
    get(key: string): Uint8Array | undefined;
    set(key: string, value: Uint8Array): void;
    delete(key: string): void;
    exists(key: string): boolean;
    listKeys(cursor: string | undefined): KeyResponse;
    [Symbol.dispose](): void;
  }
}

declare module "wasi:keyvalue/atomics@0.2.0-draft2" {
  import type { Bucket, Error } from "wasi:keyvalue/store@0.2.0-draft2";
  export type CasError = { tag: "store-error"; val: Error } | { tag: "cas-failed"; val: Cas };
  export class Cas {
    /** Throws an Error. */
    static new(bucket: Bucket, key: string): Cas;
    /** Throws an Error. */
    current(): Uint8Array | undefined;
    [Symbol.dispose](): void;
  }
  /** Throws an Error. */
  export function increment(bucket: Bucket, key: string, delta: bigint): bigint;
  /** Takes the handle; throws a CasError. */
  export function swap(cas: Cas, value: Uint8Array): void;
}

declare module "optech:plugin/keyvalue-extras@0.1.0" {
  import type { Bucket, KeyResponse } from "wasi:keyvalue/store@0.2.0-draft2";
  /** Throws an Error. */
  export function setWithTtl(bucket: Bucket, key: string, value: Uint8Array, ttlSeconds: bigint): void;
  /** Throws an Error. */
  export function listKeysWithPrefix(bucket: Bucket, prefix: string, cursor: string | undefined): KeyResponse;
}
