// Contender (g) of optech-bench: the Node app a TypeScript team would write
// instead of an optech plugin, on the platform's own example stack (Express).
// It does the host's work for an echo: checks the request's HMAC signature over
// the raw body, answers the inputs as data, and signs the answer. One process:
//
//   OPTECH_CLIENT_SECRET=... PORT=8080 node express_echo.mjs
import crypto from "node:crypto";

import express from "express";

const secret = process.env.OPTECH_CLIENT_SECRET;
const port = Number(process.env.PORT ?? 8080);
const sign = (bytes) => crypto.createHmac("sha256", secret).update(bytes).digest("hex");

function reply(res, status, answer) {
  const body = JSON.stringify(answer);
  res
    .status(status)
    .set("content-type", "application/json")
    .set("x-optech-signature", sign(body))
    .send(body);
}

const error = (res, status, code, message) => reply(res, status, { error: { code, message } });

const app = express();
app.disable("x-powered-by");
app.disable("etag");
app.post("/", express.raw({ type: () => true, limit: "1mb" }), (req, res) => {
  const body = req.body instanceof Buffer ? req.body : Buffer.alloc(0);
  const given = Buffer.from(req.get("x-optech-signature") ?? "");
  const expected = Buffer.from(sign(body));
  if (given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) {
    return error(res, 401, "invalid_signature", "the signature does not match the body");
  }
  let envelope;
  try {
    envelope = JSON.parse(body.toString("utf8"));
  } catch {
    return error(res, 400, "invalid_request", "not a data request");
  }
  const inputs = envelope?.inputs ?? {};
  if (typeof envelope?.key !== "string" || typeof inputs !== "object" || Array.isArray(inputs)) {
    return error(res, 400, "invalid_request", "not a data request");
  }
  if (envelope.key !== "echo") {
    return error(res, 404, "unknown_key", "no such key");
  }
  const data = {};
  for (const [name, value] of Object.entries(inputs)) {
    data[name] = typeof value === "string" ? value : JSON.stringify(value);
  }
  return reply(res, 200, { data });
});

app.listen(port, "127.0.0.1", () => {
  console.log(`express echo listening on http://127.0.0.1:${port}`);
});
