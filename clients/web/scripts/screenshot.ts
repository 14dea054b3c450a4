// A screenshot of the page answering a question, for the docs:
//   node build/scripts/screenshot.js http://127.0.0.1:8080/ ../../docs/chat-page.png "Question?"
// (a gateway running, e.g. `make run`; `make web-screenshot` does both).

import { chromium } from "playwright-core";

const [url, out, question = "What is the capital of France? Answer in one sentence."] =
  process.argv.slice(2);
if (!url || !out) {
  console.error("usage: screenshot.js PAGE_URL OUT.png [QUESTION]");
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  chromiumSandbox: false,
  args: ["--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 820, height: 560 } });
  await page.goto(url);
  await page.getByLabel("Message").fill(question);
  await page.getByLabel("Message").press("Enter");
  await page.locator(".message.assistant .note").getByText("tokens").waitFor({ timeout: 120_000 });
  await page.screenshot({ path: out });
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
}
