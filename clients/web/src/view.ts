// The page's elements and how the conversation is drawn.

/** The element of index.html with `id`, checked to be a `kind`. */
function element<T extends HTMLElement>(id: string, kind: new () => T): T {
  const found = document.getElementById(id);
  if (!(found instanceof kind)) {
    throw new Error(`the page has no ${kind.name} #${id}`);
  }
  return found;
}

/** The controls of index.html. */
export const ui = {
  model: element("model", HTMLSelectElement),
  apiKey: element("api-key", HTMLInputElement),
  newChat: element("new-chat", HTMLButtonElement),
  conversation: element("conversation", HTMLElement),
  empty: element("empty", HTMLParagraphElement),
  error: element("error", HTMLParagraphElement),
  composer: element("composer", HTMLFormElement),
  prompt: element("prompt", HTMLTextAreaElement),
  send: element("send", HTMLButtonElement),
  stop: element("stop", HTMLButtonElement),
};

/** One message on screen; an assistant's grows as its tokens arrive. */
export class Bubble {
  readonly root: HTMLElement;
  private readonly text: HTMLElement;
  private readonly note: HTMLElement;

  constructor(role: "user" | "assistant", content = "") {
    this.root = document.createElement("article");
    this.root.className = `message ${role}`;
    const who = document.createElement("h2");
    who.className = "who";
    who.textContent = role === "user" ? "You" : "Assistant";
    this.text = document.createElement("p");
    this.text.className = "text";
    this.text.textContent = content;
    this.note = document.createElement("p");
    this.note.className = "note";
    this.root.append(who, this.text, this.note);
    ui.empty.hidden = true;
    ui.conversation.append(this.root);
    this.root.scrollIntoView({ block: "end" });
  }

  /** Add the text of one step. */
  append(text: string): void {
    this.text.append(text);
    this.root.scrollIntoView({ block: "end" });
  }

  /** While busy, assistive technology waits for the whole answer before reading it. */
  set busy(value: boolean) {
    this.root.setAttribute("aria-busy", String(value));
  }

  /** A line under the message: the answer's figures, or why it ended early. */
  set footnote(value: string) {
    this.note.textContent = value;
  }

  get content(): string {
    return this.text.textContent;
  }
}

/** Remove every message. */
export function clearConversation(): void {
  for (const message of ui.conversation.querySelectorAll(".message")) {
    message.remove();
  }
  ui.empty.hidden = false;
}

/** Show `message` in the alert (empty: hide it). */
export function showError(message: string): void {
  ui.error.textContent = message;
  ui.error.hidden = message === "";
}
