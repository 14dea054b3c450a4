// The chat page is built into the server package that serves it (git-ignored; `make web`).
import { defineConfig } from "vite";

export default defineConfig({
  build: {
    outDir: "../../server/streamgate/gateway/connect/page",
    emptyOutDir: true,
    // Tested in a current Chromium; any browser of the last years runs it.
    target: "es2022",
  },
});
