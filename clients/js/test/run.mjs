// `npm test`: the unit tests (fake WebSocket, fake clock), then the integration tests against a
// real liveclass-socket and a real redis-server on loopback.
//
// Node 22+ has a global WebSocket; Node 20.10+ gets it with --experimental-websocket (the
// same undici implementation). The socket server binary is LIVECLASS_SOCKET_BIN, or built here
// with `cargo build -p liveclass-socket` (a no-op when it is up to date) into CARGO_TARGET_DIR.
// The class page test runs in headless Chromium (LIVECLASS_CHROMIUM, or `chromium` on PATH),
// behind Caddy (LIVECLASS_CADDY, or the one scripts/caddy-binary has cached); without Caddy the
// page is served by a node:http static server; without Chromium that test is skipped, loudly.
// LIVECLASS_JS_UNIT_ONLY=1 runs the unit tests only.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "../../..");
const flags = typeof globalThis.WebSocket === "function" ? [] : ["--experimental-websocket"];
const env = { ...process.env };

const files = [path.join(here, "client.test.mjs")];
if (process.env.LIVECLASS_JS_UNIT_ONLY !== "1") {
  if (!env.LIVECLASS_SOCKET_BIN) {
    const target = env.CARGO_TARGET_DIR ?? path.join(repo, "target");
    console.error(`building liveclass-socket (cargo build -p liveclass-socket, target ${target})`);
    const build = spawnSync("cargo", ["build", "-p", "liveclass-socket"], { cwd: repo, stdio: "inherit", env });
    if (build.status !== 0) process.exit(build.status ?? 1);
    env.LIVECLASS_SOCKET_BIN = path.join(target, "debug", "liveclass-socket");
  }
  if (!existsSync(env.LIVECLASS_SOCKET_BIN)) {
    console.error(`no socket server binary at ${env.LIVECLASS_SOCKET_BIN}`);
    process.exit(1);
  }
  files.push(path.join(here, "integration.test.mjs"));

  const chromium = env.LIVECLASS_CHROMIUM ?? "chromium";
  if (spawnSync(chromium, ["--version"], { stdio: "ignore" }).status === 0) {
    env.LIVECLASS_CHROMIUM = chromium;
    if (!env.LIVECLASS_CADDY) {
      const caddy = spawnSync(path.join(repo, "scripts/caddy-binary"), ["--print-path", "--no-build"], {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "ignore"],
      });
      if (caddy.status === 0 && caddy.stdout.trim()) env.LIVECLASS_CADDY = caddy.stdout.trim();
    }
    files.push(path.join(here, "browser.test.mjs"));
  } else {
    console.error(`SKIPPED the class page test: no Chromium (${chromium}); install Debian's chromium package`);
  }
}

const run = spawnSync(
  process.execPath,
  [...flags, "--test", "--test-concurrency=1", ...files],
  { stdio: "inherit", env },
);
process.exit(run.status ?? 1);
