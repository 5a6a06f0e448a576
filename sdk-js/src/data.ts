/**
 * What a handler returns: the answer's `data`, one field per property. String
 * values go as they are; any other value as its JSON text (`true` becomes
 * `"true"`, `12` becomes `"12"`, an object its JSON). Properties whose value is
 * `undefined` are left out, as `JSON.stringify` does.
 */
export type Data = { readonly [name: string]: unknown } | ReadonlyMap<string, unknown>;

/** The `fields` of the WIT: `[name, value]` pairs, in order. */
export type Fields = Array<[string, string]>;

/** Turns a handler's return value into the answer's fields, or says why it cannot. */
export function toFields(data: unknown): Fields {
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    throw new TypeError(
      `a handler must return an object (the answer's data), not ${describe(data)}`,
    );
  }
  const entries: Iterable<[unknown, unknown]> =
    data instanceof Map ? data.entries() : Object.entries(data);
  const fields: Fields = [];
  for (const [name, value] of entries) {
    if (value === undefined) continue;
    fields.push([String(name), fieldText(String(name), value)]);
  }
  return fields;
}

function fieldText(name: string, value: unknown): string {
  if (typeof value === "string") return value;
  if (typeof value === "bigint") return value.toString();
  const text = JSON.stringify(value, (_key, v: unknown) =>
    typeof v === "bigint" ? v.toString() : v,
  );
  if (text === undefined) {
    throw new TypeError(`data field \`${name}\` is a ${typeof value}, which has no JSON text`);
  }
  return text;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return `a ${typeof value}`;
}
