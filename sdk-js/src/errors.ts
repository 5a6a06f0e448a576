/**
 * The request's inputs are wrong: a value is missing, malformed or out of range.
 * Thrown from a handler, it is answered `400 invalid_input` with its message;
 * retrying the same request will not help. Any other thrown value is answered
 * `500 plugin_error`.
 *
 * ```ts
 * if (!/^[A-Z]-\d+$/.test(id)) throw new InvalidInput(`${id} is not an order id`);
 * ```
 */
export class InvalidInput extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InvalidInput";
  }
}

/** Why an outbound request got no response (see {@link FetchError}). */
export type FetchFailure =
  /** The host refused the destination: not in the plugin's `allowed_hosts`, or an internal address it does not name. */
  | "denied"
  /** No response, or no complete body, within `http_timeout` or the call's deadline. */
  | "timeout"
  /** The back end could not be reached: refused, not found, TLS failed. */
  | "connect"
  /** The response body is larger than the plugin's `max_http_response`. */
  | "too-large"
  /** Anything else: a URL or header the host does not accept, a malformed response. */
  | "other";

/**
 * How `fetch()` rejects inside the host when a request gets no response. Like
 * the `TypeError` of a standard `fetch`, with why in {@link FetchError.reason}.
 * Uncaught, it is answered `500 plugin_error` with its message.
 */
export class FetchError extends TypeError {
  /** Why there is no response. */
  readonly reason: FetchFailure;
  /** The URL the request was for. */
  readonly url: string;

  constructor(reason: FetchFailure, url: string, message: string) {
    super(message);
    this.name = "FetchError";
    this.reason = reason;
    this.url = url;
  }
}

/** Why a store call failed (see {@link StoreError}). */
export type StoreFailure =
  /** No bucket of that name exists. */
  | "no-such-store"
  /** The bucket is not granted to this plugin: `stores` in its `[plugins.NAME]` table must name it. */
  | "access-denied"
  /** Anything else: a limit, a store that is down, the call's deadline. */
  | "other";

/**
 * How a call on a {@link Bucket} fails: the bucket is not granted to the
 * plugin, a limit refused the write, the store is down or did not answer by
 * the request's deadline. The message says which (and, for a limit, the
 * setting that changes it). Uncaught, it is answered `500 plugin_error` with
 * its message.
 */
export class StoreError extends Error {
  /** Why the call failed. */
  readonly kind: StoreFailure;
  /** The bucket the call was on. */
  readonly bucket: string;

  constructor(kind: StoreFailure, bucket: string, message: string) {
    super(message);
    this.name = "StoreError";
    this.kind = kind;
    this.bucket = bucket;
  }
}
