// Answers "order status" from a REST back end: GET {base_url}/orders/{id} with a
// bearer token, and the order's fields as data. The TypeScript twin of
// plugins/orders (Rust).
//
// The host lets it reach only the hosts in its `allowed_hosts`, and the token
// comes from the environment, not the config file:
//
//   [plugins.orders-ts]
//   allowed_hosts = ["https://api.example.com"]
//
//   [plugins.orders-ts.config]
//   base_url = "https://api.example.com"
//   token = { env = "ORDERS_API_TOKEN" }
import { InvalidInput, config, handler, log } from "optech-sdk";

export const handle = handler(async (req) => {
  const id = req.inputs.require("order_id"); // absent: InvalidInput, answered 400
  if (!/^[A-Za-z0-9_-]+$/.test(id)) {
    throw new InvalidInput(`\`order_id\` ${JSON.stringify(id)} is not an order id`);
  }
  const base = config("base_url");
  if (!base) throw new Error("base_url is not set"); // any other throw: 500 plugin_error
  const res = await fetch(`${base.replace(/\/+$/, "")}/orders/${id}`, {
    headers: { authorization: `Bearer ${config("token") ?? ""}`, accept: "application/json" },
  });
  if (res.status === 404) throw new InvalidInput(`no order ${id}`);
  if (!res.ok) throw new Error(`the orders back end answered ${res.status}`);
  log.info(`order ${id} found`);
  return orderData(id, await res.text());
});

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
