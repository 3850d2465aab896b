// Opens a plateau HTML report from disk in headless Chromium with the network blocked, and prints what a test
// needs to judge it: console errors, page errors, requests that left the file, and the charts' visibility.
// Usage: node check-report.mjs REPORT.html SCREENSHOT.png
import { launchChromium } from "./launch.mjs";
import { pathToFileURL } from "node:url";

const [report, screenshot] = process.argv.slice(2);
const browser = await launchChromium();
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const consoleErrors = [];
  const externalRequests = [];
  page.on("console", (message) => { if (message.type() === "error") consoleErrors.push(message.text()); });
  page.on("pageerror", (error) => consoleErrors.push(String(error)));
  await page.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith("file:") || url.startsWith("data:")) return route.continue();
    externalRequests.push(url);
    return route.abort();
  });
  await page.goto(pathToFileURL(report).href, { waitUntil: "load" });
  const charts = await page.$$eval("svg", (svgs) => svgs.map((svg) => {
    const box = svg.getBoundingClientRect();
    const style = getComputedStyle(svg);
    return {
      label: svg.getAttribute("aria-label"),
      width: box.width,
      height: box.height,
      visible: box.width > 0 && box.height > 0 && style.visibility !== "hidden" && style.display !== "none",
      lines: svg.querySelectorAll("polyline").length,
      points: svg.querySelectorAll("circle").length,
    };
  }));
  const title = await page.title();
  const recommendation = await page.$eval("#recommendation", (element) => element.textContent.trim());
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify({ title, recommendation, consoleErrors, externalRequests, charts }));
} finally {
  await browser.close();
}
