// The API key, kept in this tab's session storage only (gone when the tab closes).

const KEY = "streamgate.apiKey";

export function loadApiKey(): string {
  return sessionStorage.getItem(KEY) ?? "";
}

export function saveApiKey(value: string): void {
  if (value) {
    sessionStorage.setItem(KEY, value);
  } else {
    sessionStorage.removeItem(KEY);
  }
}
