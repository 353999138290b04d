#!/usr/bin/env node
// Mints a class token for trying the page locally (the school's backend does this in
// production; see PROTOCOL.md). HS256 with node:crypto, no dependencies.
//
//   node clients/web/mint-token.mjs --secret-file secret --class school/physics-101 \
//     --user ada --role student [--name Ada] [--ttl 7200]
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    "secret-file": { type: "string" },
    class: { type: "string" },
    user: { type: "string" },
    role: { type: "string", default: "student" },
    name: { type: "string" },
    ttl: { type: "string", default: "7200" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help || !values["secret-file"] || !values.class || !values.user) {
  console.error("usage: mint-token.mjs --secret-file FILE --class NS/NAME --user ID [--role student|teacher] [--name NAME] [--ttl SECONDS]");
  process.exit(values.help ? 0 : 2);
}
// Trailing newlines are not part of the secret (the server trims them too).
const raw = readFileSync(values["secret-file"]);
let end = raw.length;
while (end > 0 && (raw[end - 1] === 0x0a || raw[end - 1] === 0x0d)) end--;
const secret = raw.subarray(0, end);
const now = Math.floor(Date.now() / 1000);
const claims = { sub: values.user, class: values.class, role: values.role, iat: now, exp: now + Number(values.ttl) };
if (values.name) claims.name = values.name;
const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
const unsigned = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
console.log(`${unsigned}.${createHmac("sha256", secret).update(unsigned).digest("base64url")}`);
