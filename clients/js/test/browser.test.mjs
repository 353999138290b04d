// The class page in headless Chromium: a teacher and a student in one class, through Caddy
// (file_server for the page, reverse_proxy for /ws) in front of two real socket servers and a
// real Redis. A comment typed in one page appears in the other, presence reads 2, a reaction is
// counted, the teacher's DM reaches the student; screenshots go to test-output/.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { readFile } from "node:fs/promises";

import { Browser } from "./browser.mjs";
import { Stack, freePort, mintToken, until } from "./stack.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const clientsDir = path.resolve(here, "../..");
const outDir = path.resolve(here, "../test-output");

const stack = new Stack();
let browser;
let origin;
let caddy;
let staticServer;

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".map": "application/json" };

/** Without Caddy: a minimal static server for clients/ (the page then connects to a socket server directly). */
function serveStatic(port) {
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, "http://x");
    let file = path.normalize(path.join(clientsDir, decodeURIComponent(url.pathname.replace(/^\/class/, ""))));
    if (!file.startsWith(clientsDir)) return res.writeHead(403).end();
    if (file.endsWith("/")) file += "index.html";
    try {
      const body = await readFile(file);
      res.writeHead(200, { "content-type": TYPES[path.extname(file)] ?? "application/octet-stream" }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  return new Promise((resolve) => server.listen(port, "127.0.0.1", () => resolve(server)));
}

before(async () => {
  mkdirSync(outDir, { recursive: true });
  await stack.redis();
  const port = await freePort();
  origin = `http://127.0.0.1:${port}`;
  // Browsers send Origin; the servers accept the page's (and refuse others: 403 `origin`).
  const args = ["--allowed-origin", origin];
  const s1 = await stack.socket("web-1", { args });
  const s2 = await stack.socket("web-2", { args });
  if (process.env.LIVECLASS_CADDY) {
    // The snippet the project's Caddyfile carries (see clients/web/README.md), on a free port.
    const caddyfile = path.join(stack.dir, "Caddyfile");
    writeFileSync(caddyfile, `{
	admin off
	auto_https off
}
http://127.0.0.1:${port} {
	handle_path /class/* {
		root * ${clientsDir}
		file_server
	}
	reverse_proxy 127.0.0.1:${s1.port} 127.0.0.1:${s2.port} {
		lb_policy round_robin
		flush_interval -1
	}
}
`);
    caddy = spawn(process.env.LIVECLASS_CADDY, ["run", "--config", caddyfile, "--adapter", "caddyfile"], {
      stdio: ["ignore", "ignore", "ignore"],
    });
    await until("caddy to serve the page", async () => (await fetch(`${origin}/class/web/`)).status === 200, { timeoutMs: 15_000 });
    origin += "/class";
    console.error(`the page is served by Caddy (${process.env.LIVECLASS_CADDY}); /ws goes through its reverse_proxy`);
  } else {
    staticServer = await serveStatic(port);
    origin += "/class";
    process.env.LIVECLASS_TEST_WS = s1.url;
    console.error("LIVECLASS_CADDY is not set: the page is served by a node:http static server and connects to a socket server directly");
  }
  browser = await Browser.launch(process.env.LIVECLASS_CHROMIUM ?? "chromium");
});

after(async () => {
  await browser?.close();
  caddy?.kill("SIGKILL");
  staticServer?.close();
  await stack.stop();
});

function pageUrl(token) {
  const params = new URLSearchParams({ token });
  if (process.env.LIVECLASS_TEST_WS) params.set("ws", process.env.LIVECLASS_TEST_WS);
  return `${origin}/web/?${params}`;
}

async function openClass(token) {
  const page = await browser.newPage();
  await page.goto(pageUrl(token));
  await until("the page to connect", async () => (await page.eval("window.liveclass?.state")) === "connected", {
    timeoutMs: 20_000,
    everyMs: 100,
  }).catch(async (error) => {
    const where = await page.eval("location.href + ' | status: ' + document.getElementById('status')?.textContent").catch((e) => e.message);
    throw new Error(`${error.message}\n${where}\nconsole:\n${page.console.join("\n")}`);
  });
  return page;
}

const text = (page, selector) => page.eval(`document.querySelector(${JSON.stringify(selector)})?.textContent ?? null`);

test("two pages of one class: comments, presence, reactions, a teacher's DM", async () => {
  const klass = "school/physics-101";
  const teacher = await openClass(mintToken({ sub: "t-lee", class: klass, role: "teacher", name: "Dr. Lee" }));
  const student = await openClass(mintToken({ sub: "ada", class: klass, role: "student", name: "Ada" }));

  for (const page of [teacher, student]) {
    await until("presence 2", async () => (await text(page, "#presence-count")) === "2", { timeoutMs: 10_000, everyMs: 100 });
  }
  assert.equal(await text(teacher, "#role"), "teacher");
  assert.equal(await text(student, "#role"), "student");
  assert.equal(await teacher.eval("document.getElementById('dm-panel').hidden"), false);
  assert.equal(await student.eval("document.getElementById('dm-panel').hidden"), true);

  // Typed in the student's page, seen in the teacher's.
  await student.type("#comment-text", "Is the exam open book?");
  await student.press("Enter");
  const seen = `[...document.querySelectorAll('#comments .text')].map((e) => e.textContent)`;
  await until("the comment in the teacher's page", async () => (await teacher.eval(seen)).includes("Is the exam open book?"), { everyMs: 100 });
  await teacher.type("#comment-text", "Yes — one page of notes.");
  await teacher.press("Enter");
  for (const page of [teacher, student]) {
    await until("both comments in order", async () => {
      const all = await page.eval(seen);
      return all.join("|") === "Is the exam open book?|Yes — one page of notes.";
    }, { everyMs: 100 });
  }
  assert.equal(await student.eval("document.querySelectorAll('#comments .own').length"), 1);

  // A reaction from the student is counted in the teacher's page.
  await student.eval("document.querySelector('#react-buttons .react').click()");
  await until("the reaction total", async () => (await text(teacher, "#reaction-totals")) === "👍1", { everyMs: 100 });

  // The teacher clicks the student's name and sends a DM; only the student sees it.
  await teacher.eval("document.querySelector('#comments .comment:not(.own) .author').click()");
  assert.equal(await teacher.eval("document.getElementById('dm-to').value"), "ada");
  await teacher.type("#dm-text", "Please stay after class.");
  await teacher.eval("document.querySelector('#dm-form button').click()");
  await until("the DM in the student's inbox", async () => (await text(student, "#dms")).includes("Please stay after class."), { everyMs: 100 });
  assert.match(await text(student, "#dms"), /Dr\. Lee/);

  writeFileSync(path.join(outDir, "class-page-student.png"), await student.screenshot());
  writeFileSync(path.join(outDir, "class-page-teacher.png"), await teacher.screenshot());
  const errors = [...teacher.console, ...student.console].filter((line) => line.startsWith("exception"));
  assert.deepEqual(errors, []);
});
