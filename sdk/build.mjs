// Builds the one minified IIFE the api serves: dist/recomengine.js (no runtime dependencies).
import { build } from "esbuild";

await build({
  entryPoints: ["src/index.ts"],
  outfile: "dist/recomengine.js",
  bundle: true,
  minify: true,
  format: "iife",
  target: ["chrome80", "firefox78", "safari13", "edge80"],
  legalComments: "none",
  logLevel: "warning",
});
