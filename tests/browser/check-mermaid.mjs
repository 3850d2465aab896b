// Draws every ```mermaid block of a Markdown file with Mermaid itself (the library GitHub and GitLab render them
// with), in Debian's headless Chromium with the network blocked, and prints what a test needs to judge each block:
// whether it parsed, the error if not, and how many lines and bars the drawn chart holds.
// Usage: node check-mermaid.mjs FILE.md
import { launchChromium } from "./launch.mjs";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const [markdown] = process.argv.slice(2);
const blocks = [...readFileSync(markdown, "utf8").matchAll(/^```mermaid\n([\s\S]*?)^```$/gm)].map((match) => match[1]);
const mermaidScript = createRequire(import.meta.url).resolve("mermaid/dist/mermaid.min.js");
const browser = await launchChromium();
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.route("**/*", (route) => route.abort());
  await page.setContent("<!doctype html><html><body></body></html>");
  await page.addScriptTag({ path: mermaidScript });
  const charts = await page.evaluate(async (blocks) => {
    // GitHub renders with securityLevel strict; so does this check.
    window.mermaid.initialize({ startOnLoad: false, securityLevel: "strict" });
    const results = [];
    for (const [index, text] of blocks.entries()) {
      try {
        await window.mermaid.parse(text);
        const { svg } = await window.mermaid.render(`chart${index}`, text);
        const holder = document.createElement("div");
        holder.innerHTML = svg;
        results.push({
          ok: true,
          title: holder.querySelector(".chart-title text, g.chart-title text")?.textContent ?? null,
          lines: holder.querySelectorAll("g.line-plot-0 path, g[class^='line-plot'] path").length,
          bars: holder.querySelectorAll("g[class^='bar-plot'] rect").length,
        });
      } catch (error) {
        results.push({ ok: false, error: String(error && error.message ? error.message : error) });
      }
    }
    return results;
  }, blocks);
  console.log(JSON.stringify({ blocks: blocks.length, charts }));
} finally {
  await browser.close();
}
