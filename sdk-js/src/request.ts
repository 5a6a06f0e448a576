import { InvalidInput } from "./errors.js";

/**
 * A request's inputs: every value a string, in request order. A name given
 * twice keeps its last value.
 */
export class Inputs implements Iterable<[string, string]> {
  readonly #values = new Map<string, string>();

  /** Inputs from `[name, value]` pairs or an object, as a handler's unit test may give them. */
  constructor(pairs: Iterable<readonly [string, string]> | Record<string, string> = []) {
    const list = isIterable(pairs) ? pairs : Object.entries(pairs);
    for (const [name, value] of list) {
      this.#values.set(String(name), String(value));
    }
  }

  /** The value of `name`, or `undefined` if the request has none. */
  get(name: string): string | undefined {
    return this.#values.get(name);
  }

  /** The value of `name`; if absent, an {@link InvalidInput} naming it (answered 400). */
  require(name: string): string {
    const value = this.#values.get(name);
    if (value === undefined) {
      throw new InvalidInput(`missing input \`${name}\``);
    }
    return value;
  }

  /** Whether the request has an input called `name`. */
  has(name: string): boolean {
    return this.#values.has(name);
  }

  /** `[name, value]` pairs, in request order. */
  entries(): IterableIterator<[string, string]> {
    return this.#values.entries();
  }

  /** How many inputs there are. */
  get size(): number {
    return this.#values.size;
  }

  [Symbol.iterator](): IterableIterator<[string, string]> {
    return this.entries();
  }

  /** The inputs as a plain object (for logging or spreading). */
  toJSON(): Record<string, string> {
    return Object.fromEntries(this.#values);
  }
}

/** One data request, as a handler sees it. */
export interface Request {
  /** The request's `key`: one plugin can serve several keys. */
  readonly key: string;
  /** The request's inputs. */
  readonly inputs: Inputs;
}

function isIterable<T>(value: unknown): value is Iterable<T> {
  return typeof value === "object" && value !== null && Symbol.iterator in value;
}
