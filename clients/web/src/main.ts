// The chat: pick a model, send messages, read the answers as they stream; Stop, New chat.

import "./style.css";
import { listModels, streamReply, type Turn } from "./api";
import type { Model } from "./gen/streamgate/v1/generation_pb";
import { describeError, isAbort } from "./errors";
import { loadApiKey, saveApiKey } from "./session";
import { describeEnd } from "./stats";
import { Bubble, clearConversation, showError, ui } from "./view";

const turns: Turn[] = [];
let running: AbortController | null = null;
// Which conversation an answer belongs to: one that ends after New chat is not kept.
let conversation = 0;

function setRunning(controller: AbortController | null): void {
  running = controller;
  ui.send.disabled = controller !== null;
  ui.stop.disabled = controller === null;
}

async function loadModels(): Promise<void> {
  ui.model.disabled = true;
  try {
    const models = await listModels(ui.apiKey.value.trim());
    // Keep the model picked before (a key change), else the default one.
    const chosen = ui.model.value;
    const selected = (m: Model) => (chosen ? m.name === chosen : m.default);
    const options = models.map((m) => new Option(m.name, m.name, m.default, selected(m)));
    ui.model.replaceChildren(...options);
    ui.model.disabled = models.length === 0;
    showError(models.length === 0 ? "Your API key may not use any model here." : "");
  } catch (error) {
    ui.model.replaceChildren(new Option("none available", ""));
    showError(describeError(error));
  }
}

async function send(text: string): Promise<void> {
  showError("");
  turns.push({ role: "user", content: text });
  new Bubble("user", text);
  const answer = new Bubble("assistant");
  answer.busy = true;
  const controller = new AbortController();
  const started = conversation;
  setRunning(controller);
  try {
    const replies = streamReply(turns, ui.model.value, ui.apiKey.value.trim(), controller.signal);
    for await (const reply of replies) {
      if (reply.event.case === "delta") {
        answer.append(reply.event.value.text);
      } else if (reply.event.case === "end") {
        answer.footnote = describeEnd(reply.event.value);
      }
    }
  } catch (error) {
    if (isAbort(error)) {
      answer.footnote = "Stopped.";
    } else {
      answer.footnote = "No answer.";
      showError(describeError(error));
    }
  } finally {
    answer.busy = false;
    if (answer.content && started === conversation) {
      turns.push({ role: "assistant", content: answer.content });
    }
    if (running === controller) {
      setRunning(null);
    }
  }
}

function stop(): void {
  running?.abort();
}

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.prompt.value.trim();
  if (!text || running !== null) {
    return;
  }
  ui.prompt.value = "";
  void send(text);
});

ui.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  } else if (event.key === "Escape") {
    stop();
  }
});

ui.stop.addEventListener("click", () => {
  stop();
  ui.prompt.focus();
});

ui.newChat.addEventListener("click", () => {
  stop();
  conversation += 1;
  turns.length = 0;
  clearConversation();
  showError("");
  ui.prompt.focus();
});

ui.apiKey.value = loadApiKey();
ui.apiKey.addEventListener("change", () => {
  saveApiKey(ui.apiKey.value.trim());
  void loadModels();
});

void loadModels();
ui.prompt.focus();
