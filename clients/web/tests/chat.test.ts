// The chat page in a real Chromium (Debian's, driven by playwright-core) against a gateway whose
// embedded engine serves the tiny model: it loads, streams answers, stops them, and explains
// failures.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { chromium, type Browser, type Page } from "playwright-core";
import { metric, startGateway, waitFor, type Gateway } from "./gateway.js";

const KEY = "web-test-key";
const LIMITED_KEY = "web-test-limited-key";
// Greedy decoding: the same prompt always gets the same answer. This one runs to the route's
// max_new_tokens on the tiny model (no early end of sequence).
const PROMPT = "Tell me a long story.";

// Headless, and nothing that reaches outside this machine.
const CHROMIUM_ARGS = [
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

// Set by `before`; undefined when it failed.
let running: { gateway: Gateway; browser: Browser } | undefined;
let starting: Gateway | undefined;

function started(): { gateway: Gateway; browser: Browser } {
  if (running === undefined) {
    throw new Error("the gateway or the browser did not start");
  }
  return running;
}

before(async () => {
  starting = await startGateway(
    {
      embedded: { model: "tiny" },
      routes: [
        { name: "tiny", backends: ["embedded"], max_new_tokens: 400 },
        { name: "tiny-short", backends: ["embedded"], max_new_tokens: 8 },
        // Stop must land while the engine still generates: the tiny model streams 400 tokens
        // in well under a second, faster than the page draws them.
        { name: "tiny-long", backends: ["embedded"], max_new_tokens: 1900 },
      ],
      // Every message must reach the engine (the same prompt repeats).
      cache: { enabled: false },
      auth: { enabled: true },
      tenants: [
        { name: "web", keys: [{ name: "page", key_env: "WEB_TEST_KEY" }] },
        {
          name: "limited",
          keys: [{ name: "limited", key_env: "WEB_TEST_LIMITED_KEY" }],
          limits: { requests_per_minute: 1 },
        },
      ],
    },
    { WEB_TEST_KEY: KEY, WEB_TEST_LIMITED_KEY: LIMITED_KEY },
  );
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    chromiumSandbox: false,
    args: CHROMIUM_ARGS,
  });
  running = { gateway: starting, browser };
});

after(async () => {
  await running?.browser.close();
  await starting?.stop();
});

/** A fresh page (its own session storage) with `key` entered. */
async function open(key = KEY, width = 1000): Promise<Page> {
  const page = await started().browser.newPage({ viewport: { width, height: 800 } });
  await page.goto(started().gateway.pageUrl);
  if (key) {
    await page.getByLabel("API key").fill(key);
    await page.getByLabel("API key").dispatchEvent("change");
  }
  return page;
}

async function ask(page: Page, text: string, model?: string): Promise<void> {
  if (model !== undefined) {
    await page.getByLabel("Model").selectOption(model);
  }
  await page.getByLabel("Message").fill(text);
  await page.getByLabel("Message").press("Enter");
}

function lastAnswer(page: Page) {
  return page.locator(".message.assistant").last();
}

void describe("the chat page", () => {
  void test("loads with labelled controls and lists the routes in the model picker", async () => {
    const page = await open("");
    assert.equal(await page.evaluate(() => document.activeElement?.id), "prompt");
    // Auth is on: without a key the page says what to do.
    await page.getByRole("alert").getByText("needs an API key").waitFor();
    await page.getByLabel("API key").fill(KEY);
    await page.getByLabel("API key").dispatchEvent("change");
    await waitFor(async () => (await page.getByLabel("Model").isEnabled()), "the model picker");
    const models = await page.getByLabel("Model").locator("option").allTextContents();
    assert.deepEqual(models, ["tiny", "tiny-short", "tiny-long"]);
    assert.equal(await page.getByLabel("Model").inputValue(), "tiny"); // the default route
    assert.equal(await page.getByRole("alert").isHidden(), true);
    for (const name of ["Send", "Stop", "New chat"]) {
      assert.equal(await page.getByRole("button", { name }).count(), 1, name);
    }
    await page.close();
  });

  void test("streams an answer that grows over several frames before it ends", async () => {
    const page = await open();
    await waitFor(async () => page.getByLabel("Model").isEnabled(), "the model picker");
    // Sample the answer once per animation frame: how long it was, and whether End's figures
    // were already shown.
    await page.evaluate(() => {
      const seen: Array<[number, boolean]> = [];
      (window as unknown as { seen: typeof seen }).seen = seen;
      const sample = () => {
        const answer = document.querySelector(".message.assistant");
        if (answer) {
          const text = answer.querySelector(".text")?.textContent ?? "";
          const ended = (answer.querySelector(".note")?.textContent ?? "") !== "";
          seen.push([text.length, ended]);
        }
        requestAnimationFrame(sample);
      };
      requestAnimationFrame(sample);
    });
    await ask(page, PROMPT, "tiny");
    const figures = lastAnswer(page).locator(".note");
    await figures.getByText("tokens/s").waitFor({ timeout: 60_000 });
    const figuresFormat = /^TTFT \d+\.\d\d s · 400 tokens · \d+\.\d tokens\/s$/;
    assert.match(await figures.innerText(), figuresFormat);
    const seen = await page.evaluate(
      () => (window as unknown as { seen: Array<[number, boolean]> }).seen,
    );
    // Lengths shown before End's figures, short of the whole answer (its last step and End
    // may be drawn in different frames).
    const final = seen.at(-1)?.[0] ?? 0;
    const partial = new Set(
      seen.filter(([length, ended]) => length > 0 && length < final && !ended).map(([l]) => l),
    );
    assert.ok(partial.size >= 3, `text seen at ${String(partial.size)} lengths before End`);
    await page.close();
  });

  void test("Stop ends the stream, and the engine's batch empties", async () => {
    const page = await open();
    await waitFor(async () => page.getByLabel("Model").isEnabled(), "the model picker");
    const { gateway } = started();
    const cancelled = 'streamgate_requests_total{code="CANCELLED",method="GenerateStream"}';
    const before = await metric(gateway.metricsUrl, cancelled);
    await ask(page, PROMPT, "tiny-long");
    const answer = lastAnswer(page);
    await waitFor(async () => (await answer.locator(".text").innerText()).length > 0, "a token");
    const batch = () => metric(`${gateway.engineUrl}/metrics`, "tgi_batch_current_size");
    assert.equal(await batch(), 1, "the answer is being generated");
    await page.getByRole("button", { name: "Stop" }).click();
    await answer.locator(".note").getByText("Stopped.").waitFor();
    await waitFor(async () => (await batch()) === 0, "the engine's batch to empty");
    await waitFor(
      async () => (await metric(gateway.metricsUrl, cancelled)) === before + 1,
      "the gateway to count a cancelled call",
    );
    assert.equal(await page.getByRole("button", { name: "Stop" }).isDisabled(), true);
    assert.equal(await page.getByRole("button", { name: "Send" }).isEnabled(), true);
    await page.close();
  });

  void test("a wrong API key is explained", async () => {
    const page = await open("not-a-key");
    const alert = page.getByRole("alert");
    await alert.getByText("The API key was not accepted: check the API key field.").waitFor();
    await ask(page, "Hello?");
    await lastAnswer(page).locator(".note").getByText("No answer.").waitFor();
    assert.equal(await alert.innerText(), "The API key was not accepted: check the API key field.");
    await page.close();
  });

  void test("a rate limit says when to retry", async () => {
    const page = await open(LIMITED_KEY);
    await waitFor(async () => page.getByLabel("Model").isEnabled(), "the model picker");
    await ask(page, "One.", "tiny-short");
    await lastAnswer(page).locator(".note").getByText("tokens").waitFor();
    await ask(page, "Two.", "tiny-short");
    await page.getByRole("alert").getByText(/^Rate limit reached, retry in \d+ s\.$/).waitFor();
    await page.close();
  });

  void test("New chat starts over", async () => {
    const page = await open();
    await waitFor(async () => page.getByLabel("Model").isEnabled(), "the model picker");
    await ask(page, "Hi.", "tiny-short");
    await lastAnswer(page).locator(".note").getByText("tokens").waitFor();
    await page.getByRole("button", { name: "New chat" }).click();
    assert.equal(await page.locator(".message").count(), 0);
    assert.equal(await page.evaluate(() => document.activeElement?.id), "prompt");
    await page.close();
  });

  void test("fits a phone's width", async () => {
    const page = await open(KEY, 360);
    await waitFor(async () => page.getByLabel("Model").isEnabled(), "the model picker");
    await ask(page, "Hi.", "tiny-short");
    await lastAnswer(page).locator(".note").getByText("tokens").waitFor();
    const overflow = await page.evaluate(
      () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
    );
    assert.equal(overflow, 0, "nothing scrolls sideways");
    await page.close();
  });
});
