// A gateway process for the browser tests: `python -m streamgate serve` with a config of the
// test's, on free loopback ports; its page URL, metrics and embedded engine read from its output.

import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

/** The repository (tests run from clients/web). */
const ROOT = resolve(process.cwd(), "../..");
const PYTHON = process.env.STREAMGATE_PYTHON ?? join(ROOT, ".venv/bin/python");
// The embedded engine imports torch and loads its model first.
const START_SECONDS = 180;
const STOP_SECONDS = 30;

export interface Gateway {
  /** The chat page: `http://127.0.0.1:PORT/`. */
  pageUrl: string;
  metricsUrl: string;
  engineUrl: string;
  /** Its log (JSON lines on stderr). */
  log(): string;
  stop(): Promise<void>;
}

/** Start a gateway with `config` (the browser door on a free port is added) and `env`. */
export async function startGateway(
  config: Record<string, unknown>,
  env: Record<string, string> = {},
): Promise<Gateway> {
  const dir = mkdtempSync(join(tmpdir(), "streamgate-web-"));
  const configPath = join(dir, "gateway.yaml"); // JSON is YAML
  writeFileSync(
    configPath,
    JSON.stringify({
      listen: { host: "127.0.0.1", port: 0, http: { enabled: true, port: 0 } },
      metrics: { host: "127.0.0.1", port: 0 },
      ...config,
    }),
  );
  const out: string[] = [];
  const err: string[] = [];
  const child = spawn(PYTHON, ["-m", "streamgate", "serve", "--config", configPath], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout.on("data", (chunk: Buffer) => out.push(chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => err.push(chunk.toString()));
  const log = () => err.join("");
  const deadline = Date.now() + START_SECONDS * 1000;
  while (Date.now() < deadline && child.exitCode === null) {
    const text = out.join("");
    const pageUrl = /chat page: (\S+)/.exec(text)?.[1];
    const metricsUrl = /; metrics: ([^\s)]+)\)/.exec(text)?.[1];
    const engine = engineUrl(log());
    if (pageUrl && metricsUrl && engine) {
      return { pageUrl, metricsUrl, engineUrl: engine, log, stop: () => stop(child) };
    }
    await sleep(200);
  }
  await stop(child);
  throw new Error(`the gateway did not start; stdout:\n${out.join("")}\nstderr:\n${log()}`);
}

function engineUrl(log: string): string | undefined {
  for (const line of log.split("\n")) {
    if (line.startsWith("{")) {
      const record = JSON.parse(line) as { event?: string; url?: string };
      if (record.event === "embedded engine ready") {
        return record.url;
      }
    }
  }
  return undefined;
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) {
    return;
  }
  const exited = new Promise((done) => child.once("exit", done));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), STOP_SECONDS * 1000);
  await exited;
  clearTimeout(timer);
}

/** One sample of a Prometheus endpoint (`name{labels}` exactly as it prints it); 0 if absent. */
export async function metric(url: string, sample: string): Promise<number> {
  const text = await (await fetch(url)).text();
  for (const line of text.split("\n")) {
    if (line.startsWith(`${sample} `)) {
      return Number(line.slice(sample.length + 1));
    }
  }
  return 0;
}

/** Wait until `check` holds (polling), or fail saying `what`. */
export async function waitFor(
  check: () => Promise<boolean>,
  what: string,
  seconds = 10,
): Promise<void> {
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    if (await check()) {
      return;
    }
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}`);
}
