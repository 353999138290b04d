// Headless Chromium (Debian's `chromium`) driven through the DevTools protocol over the
// WebSocket it opens: no driver library, nothing downloaded. Just enough of CDP for the class
// page test: open pages, evaluate, type, screenshot.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

export class Browser {
  static async launch(binary) {
    const profile = mkdtempSync(path.join(tmpdir(), "liveclass-chromium-"));
    const child = spawn(binary, [
      "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
      "--no-first-run", "--no-default-browser-check", "--disable-extensions",
      "--disable-background-networking", "--disable-component-update", "--mute-audio",
      "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
      `--user-data-dir=${profile}`, "about:blank",
    ], { stdio: ["ignore", "ignore", "pipe"] });
    const url = await new Promise((resolve, reject) => {
      let err = "";
      const timer = setTimeout(() => reject(new Error(`chromium did not start: ${err.slice(-2000)}`)), 30_000);
      child.stderr.on("data", (chunk) => {
        err += chunk;
        const match = /DevTools listening on (ws:\/\/\S+)/.exec(err);
        if (match) {
          clearTimeout(timer);
          resolve(match[1]);
        }
      });
      child.on("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`chromium exited (${code}): ${err.slice(-2000)}`));
      });
    });
    child.stderr.resume();
    const browser = new Browser(child, profile);
    await browser.#connect(url);
    return browser;
  }

  #child;
  #profile;
  #ws;
  #id = 0;
  #calls = new Map();
  #listeners = new Set();

  constructor(child, profile) {
    this.#child = child;
    this.#profile = profile;
  }

  async #connect(url) {
    this.#ws = new WebSocket(url);
    await new Promise((resolve, reject) => {
      this.#ws.onopen = resolve;
      this.#ws.onerror = () => reject(new Error("cannot reach the DevTools endpoint"));
    });
    this.#ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.id !== undefined) {
        const call = this.#calls.get(message.id);
        this.#calls.delete(message.id);
        if (message.error) call?.reject(new Error(`${call.method}: ${message.error.message}`));
        else call?.resolve(message.result);
      } else {
        for (const listener of this.#listeners) listener(message);
      }
    };
  }

  send(method, params = {}, sessionId) {
    const id = ++this.#id;
    return new Promise((resolve, reject) => {
      this.#calls.set(id, { resolve, reject, method });
      this.#ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    });
  }

  onEvent(listener) {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  async newPage({ width = 1280, height = 800 } = {}) {
    const { targetId } = await this.send("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await this.send("Target.attachToTarget", { targetId, flatten: true });
    const page = new Page(this, sessionId);
    await page.send("Page.enable");
    await page.send("Runtime.enable");
    await page.send("Log.enable");
    await page.send("Emulation.setDeviceMetricsOverride", { width, height, deviceScaleFactor: 1, mobile: false });
    return page;
  }

  async close() {
    try {
      await Promise.race([this.send("Browser.close"), new Promise((r) => setTimeout(r, 2_000))]);
    } catch {
      // going anyway
    }
    if (this.#child.exitCode === null) this.#child.kill("SIGKILL");
    await new Promise((resolve) => (this.#child.exitCode !== null ? resolve() : this.#child.on("exit", resolve)));
    try {
      rmSync(this.#profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
    } catch {
      // a helper process still writing; it is a temporary folder
    }
  }
}

class Page {
  constructor(browser, sessionId) {
    this.browser = browser;
    this.sessionId = sessionId;
    this.console = [];
    browser.onEvent((message) => {
      if (message.sessionId !== sessionId) return;
      if (message.method === "Runtime.consoleAPICalled") {
        this.console.push(message.params.args.map((a) => a.value ?? a.description).join(" "));
      } else if (message.method === "Log.entryAdded") {
        this.console.push(`${message.params.entry.level}: ${message.params.entry.text} ${message.params.entry.url ?? ""}`);
      } else if (message.method === "Runtime.exceptionThrown") {
        this.console.push(`exception: ${message.params.exceptionDetails.exception?.description ?? message.params.exceptionDetails.text}`);
      }
    });
  }

  send(method, params = {}) {
    return this.browser.send(method, params, this.sessionId);
  }

  async goto(url) {
    await this.send("Page.navigate", { url });
  }

  /** Evaluates an expression in the page and returns its value (awaiting promises). */
  async eval(expression) {
    const result = await this.send("Runtime.evaluate", { expression, returnByValue: true, awaitPromise: true });
    if (result.exceptionDetails) {
      throw new Error(`in page: ${result.exceptionDetails.exception?.description ?? result.exceptionDetails.text}`);
    }
    return result.result.value;
  }

  /** Focuses `selector` and types `text` as keyboard input. */
  async type(selector, text) {
    await this.eval(`document.querySelector(${JSON.stringify(selector)}).focus()`);
    await this.send("Input.insertText", { text });
  }

  async press(key) {
    const code = key === "Enter" ? { key, code: "Enter", windowsVirtualKeyCode: 13, text: "\r" } : { key };
    await this.send("Input.dispatchKeyEvent", { type: "keyDown", ...code });
    await this.send("Input.dispatchKeyEvent", { type: "keyUp", ...code });
  }

  async screenshot() {
    const { data } = await this.send("Page.captureScreenshot", { format: "png" });
    return Buffer.from(data, "base64");
  }
}
