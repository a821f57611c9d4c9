/// <reference types="vitest/config" />
import tailwindcss from "@tailwindcss/vite";
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

export default defineConfig({
  plugins: [react(), tailwindcss()],
  build: {
    // Content-hashed names under assets/: the web server caches these for a year.
    assetsDir: "assets",
    sourcemap: false,
    target: "es2022",
  },
  server: {
    port: 3112,
    proxy: { "/api": "http://127.0.0.1:5008" },
  },
  test: {
    environment: "jsdom",
    setupFiles: ["./src/test/setup.ts"],
    include: ["src/**/*.test.{ts,tsx}"],
    css: false,
  },
});
