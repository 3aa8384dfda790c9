// Runs a UI workflow from a real ComfyUI editor in Debian's headless Chromium (load, cap sizes, Run) and
// reports what the pack's extension shows: the players on the page and the channel status panels, in the
// LiteGraph canvas or the Vue node renderer (setting Comfy.VueNodes.Enabled, set on the server before the
// page opens: the server keeps it for every later page).
// Usage: node comfyui_run_in_editor.mjs <comfyui url> <fresh profile dir> <on|off> <workflow.json> <caps json>
import { readFileSync } from "node:fs";
import { collectErrors, openPage } from "./chromium.mjs";

const [url, profile, vue, file, caps] = process.argv.slice(2);
const setting = await fetch(new URL("api/settings/Comfy.VueNodes.Enabled", url), { method: "POST", body: JSON.stringify(vue === "on") });
if (!setting.ok) throw new Error(`setting Comfy.VueNodes.Enabled: HTTP ${setting.status}`);
const { context, page } = await openPage(profile);
const errors = [];
try {
  collectErrors(page, errors);
  await page.goto(url);
  await page.waitForFunction(() => window.app?.graph && window.app.extensions?.length > 0, null, { timeout: 90000 });
  await page.evaluate(async ([data, limits]) => {
    const { api } = await import("/scripts/api.js");
    window.webtvRunErrors = [];
    api.addEventListener("execution_error", (e) => window.webtvRunErrors.push(e.detail?.exception_message ?? "error"));
    await window.app.loadGraphData(data);
    // Whether this renderer puts extension DOM widgets in the page: the channel node's status panel is one.
    const panels = window.app.graph._nodes.filter((n) => n.webtvStatus).map((n) => n.webtvStatus.badge);
    for (let i = 0; i < 40 && !panels.some((p) => p.isConnected); i++) await new Promise((done) => setTimeout(done, 250));
    window.webtvPanelsInPage = panels.some((p) => p.isConnected);
    for (const node of window.app.graph._nodes) {
      for (const widget of node.widgets ?? []) {
        if (widget.name in limits && typeof widget.value === "number") widget.value = Math.min(widget.value, limits[widget.name]);
        if (widget.name === "seed") widget.value = Math.floor(Math.random() * 1e9); // a new clip, not a cached run
      }
    }
    await window.app.queuePrompt(0, 1);
  }, [JSON.parse(readFileSync(file, "utf8")), JSON.parse(caps)]);
  await page.waitForFunction(() => document.querySelector("[data-webtv=video-link]")?.textContent || window.webtvRunErrors.length, null, { timeout: 240000 })
    .catch(() => {}); // the report says what it showed
  await page.waitForTimeout(3000); // the editor draws its own preview on the next frames
  if (await page.locator("[data-webtv=state]").count()) {
    const onAir = () => [...document.querySelectorAll("[data-webtv=state]")].some((e) => e.textContent === "● ON AIR");
    await page.waitForFunction(onAir, null, { timeout: 30000 }).catch(() => {}); // the report says what it showed
  }
  const facts = await page.evaluate(() => ({
    videos: [...document.querySelectorAll("video")].map((v) => ({ ours: v.dataset.webtv === "video", src: v.getAttribute("src"), shown: v.style.display !== "none" })),
    link: document.querySelector("[data-webtv=video-link]")?.textContent ?? null,
    states: [...document.querySelectorAll("[data-webtv=state]")].map((e) => e.textContent),
    runErrors: window.webtvRunErrors,
    panelsInPage: window.webtvPanelsInPage,
    vueSetting: window.app.extensionManager?.setting?.get?.("Comfy.VueNodes.Enabled") ?? null,
    frontend: window.__COMFYUI_FRONTEND_VERSION__ ?? null,
  }));
  facts.errors = errors;
  console.log(JSON.stringify(facts));
} finally {
  await context.close();
}
