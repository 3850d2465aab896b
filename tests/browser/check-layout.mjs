// Opens a plateau HTML report in headless Chromium at each viewport width given and prints, per width, what the
// layout test asserts on: elements reaching past the viewport (after their ancestors' clipping), the page's and the
// tables' horizontal scrolling, every verdict's box, chart text outside its drawing, the smallest chart text as
// drawn, and each chart's data table. Saves a full-page screenshot per width.
// Usage: node check-layout.mjs REPORT.html SCREENSHOT_PREFIX WIDTH...
import { launchChromium } from "./launch.mjs";
import { pathToFileURL } from "node:url";

const [report, screenshotPrefix, ...widths] = process.argv.slice(2);
const browser = await launchChromium();
const layouts = [];
try {
  for (const width of widths.map(Number)) {
    const page = await browser.newPage({ viewport: { width, height: 900 } });
    await page.route("**/*", (route) => {
      const url = route.request().url();
      return url.startsWith("file:") || url.startsWith("data:") ? route.continue() : route.abort();
    });
    await page.goto(pathToFileURL(report).href, { waitUntil: "load" });
    const layout = await page.evaluate(() => {
      const viewport = document.documentElement.clientWidth;
      const describe = (element) =>
        `${element.tagName.toLowerCase()}${element.id ? "#" + element.id : ""}${element.className && typeof element.className === "string" ? "." + element.className.trim().replace(/\s+/g, ".") : ""}`;
      // An element's box as the reader sees it: cut by every ancestor that clips or scrolls its overflow.
      const visibleBox = (element) => {
        const box = element.getBoundingClientRect();
        let [left, right] = [box.left, box.right];
        for (let parent = element.parentElement; parent; parent = parent.parentElement) {
          const style = getComputedStyle(parent);
          if (style.overflowX !== "visible") {
            const clip = parent.getBoundingClientRect();
            left = Math.max(left, clip.left);
            right = Math.min(right, clip.right);
          }
        }
        return { left, right, width: box.width, height: box.height };
      };
      const shown = (element) => element.checkVisibility() && element.getBoundingClientRect().width > 0;
      const overflowing = [...document.body.querySelectorAll("*")]
        .filter((element) => shown(element) && !(element.closest("svg") && element.tagName.toLowerCase() !== "svg"))
        .map((element) => [element, visibleBox(element)])
        .filter(([, box]) => box.right > viewport + 0.5 || box.left < -0.5)
        .map(([element, box]) => `${describe(element)} ${Math.round(box.left)}..${Math.round(box.right)}`);
      const scrolling = [...document.querySelectorAll(".wide")]
        .filter((element) => shown(element) && element.scrollWidth > element.clientWidth + 1)
        .map((element) => `${describe(element.firstElementChild)}${element.closest("details") ? " (chart data)" : ""}`);
      const verdicts = [...document.querySelectorAll("#configurations td.verdict")].map((cell) => {
        const box = visibleBox(cell);
        return {
          text: cell.textContent.trim(),
          visible: shown(cell) && box.left >= -0.5 && box.right <= viewport + 0.5 && box.right - box.left >= cell.getBoundingClientRect().width - 0.5,
          clipped: cell.scrollWidth > cell.clientWidth + 1,
          lines: Math.round(cell.getBoundingClientRect().height / parseFloat(getComputedStyle(cell).lineHeight)),
        };
      });
      const charts = [...document.querySelectorAll("figure.chart")].map((figure) => {
        const svg = figure.querySelector("svg");
        const [, , viewWidth, viewHeight] = svg.getAttribute("viewBox").split(/\s+/).map(Number);
        const outside = [...svg.querySelectorAll("text")]
          .map((text) => ({ text: text.textContent, box: text.getBBox(), transformed: text.hasAttribute("transform") }))
          // A rotated label's bounding box is in its own coordinates; those are checked by their position instead.
          .filter(({ box, transformed }) => !transformed && (box.x < -0.5 || box.x + box.width > viewWidth + 0.5 || box.y < -0.5 || box.y + box.height > viewHeight + 0.5))
          .map(({ text }) => text);
        const smallestTextPx = Math.min(...[...svg.querySelectorAll("text.tick")].map((text) => text.getBoundingClientRect().height));
        const table = figure.querySelector("details.chart-data table");
        return {
          label: svg.getAttribute("aria-label"),
          width: svg.getBoundingClientRect().width,
          outside,
          smallestTextPx,
          tableRows: table ? table.querySelectorAll("tbody tr").length : 0,
          tableColumns: table ? table.querySelectorAll("thead th").length : 0,
        };
      });
      return {
        viewport,
        documentWidth: document.documentElement.scrollWidth,
        overflowing: overflowing.slice(0, 20),
        scrolling,
        verdicts,
        charts,
      };
    });
    await page.screenshot({ path: `${screenshotPrefix}-${width}.png`, fullPage: true });
    layouts.push({ width, ...layout });
    await page.close();
  }
  console.log(JSON.stringify(layouts));
} finally {
  await browser.close();
}
