// Loads UI workflows into a real ComfyUI frontend in Debian's headless Chromium, the way a user's drop
// does (app.loadGraphData), in the LiteGraph canvas or the Vue node renderer ("Nodes 2.0", setting
// Comfy.VueNodes.Enabled, set on the server before the page opens), and reports per workflow: the
// missing-node warning it shows (1.49+: the `[data-testid="error-overlay"]` card "Missing node: TYPE";
// older: the "Some Nodes Are Missing" dialog), the node count on the canvas, the nodes rendered as DOM
// elements with their boxes in graph coordinates (what the Vue renderer made of each node's size), and
// the API prompt the frontend builds (app.graphToPrompt).
// Usage: node comfyui_workflows.mjs <comfyui url> <fresh profile dir> <on|off> <workflow.json>...
// Prints one JSON line.
import { readFileSync } from "node:fs";
import { collectErrors, openPage } from "./chromium.mjs";

const [url, profile, vue, ...files] = process.argv.slice(2);
const vueOn = vue === "on";
const errors = [];
const setting = await fetch(new URL("api/settings/Comfy.VueNodes.Enabled", url), { method: "POST", body: JSON.stringify(vueOn) });
if (!setting.ok) throw new Error(`setting Comfy.VueNodes.Enabled: HTTP ${setting.status}`);
// With Vue nodes the page is big enough to show every workflow whole at zoom 1, where each node is in the
// DOM at full detail (the renderer leaves nodes outside the view empty, and simplifies them when zoomed out).
const { context, page } = await openPage(profile, undefined, vueOn ? { width: 3800, height: 2200 } : undefined);

async function missingWarning() {
  const overlay = page.locator('[data-testid="error-overlay"]').filter({ hasText: /missing/i });
  const dialog = page.locator(".p-dialog").filter({ hasText: /Some Nodes Are Missing|missing/i });
  for (const found of [overlay, dialog]) {
    if (await found.count()) return (await found.first().innerText()).replace(/\s+/g, " ").trim();
  }
  return null;
}

try {
  collectErrors(page, errors);
  await page.goto(url);
  await page.waitForFunction(() => window.app?.graph && window.app.extensions?.length > 0, null, { timeout: 120000 });
  const extensions = await page.evaluate(() => window.app.extensions.map((e) => e.name));
  const frontend = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ ?? null);
  const vueSetting = await page.evaluate(() => window.app.extensionManager?.setting?.get?.("Comfy.VueNodes.Enabled") ?? null);
  const workflows = {};
  for (const file of files) {
    const workflow = JSON.parse(readFileSync(file, "utf8"));
    await page.evaluate(async (data) => window.app.loadGraphData(data), workflow);
    let missing = null;
    for (let i = 0; i < 20 && !missing; i++) {
      await page.waitForTimeout(250);
      missing = await missingWarning();
    }
    if (missing) await page.keyboard.press("Escape");
    workflows[file] = await page.evaluate(async (vueOn) => {
      const { output } = await window.app.graphToPrompt();
      if (vueOn) {
        window.app.canvas.ds.scale = 1;
        window.app.canvas.ds.offset = [0, 40];
        window.app.canvas.setDirty(true, true);
        window.app.canvas.draw(true, true); // the Vue nodes' transform follows the canvas when it draws
      }
      // Each Vue node's DOM box (title bar included) in graph coordinates, through the canvas transform,
      // read once two readings 250 ms apart agree (the renderer has settled on its sizes).
      const measure = () => {
        const canvas = window.app.canvas;
        canvas.draw(true, true);
        const origin = canvas.canvas.getBoundingClientRect();
        const { scale, offset } = canvas.ds;
        const graphX = (x) => (x - origin.left) / scale - offset[0];
        const graphY = (y) => (y - origin.top) / scale - offset[1];
        const rects = {};
        for (const el of document.querySelectorAll("[data-node-id]")) {
          const r = el.getBoundingClientRect();
          rects[el.dataset.nodeId] = [graphX(r.left), graphY(r.top), graphX(r.right), graphY(r.bottom)];
        }
        return rects;
      };
      let rects = measure();
      for (let i = 0; i < 80; i++) {
        await new Promise((done) => setTimeout(done, 250));
        const again = measure();
        const settled = JSON.stringify(again) === JSON.stringify(rects);
        rects = again;
        if (settled) break;
      }
      return { nodes: window.app.graph._nodes.length, domNodes: Object.keys(rects).length, rects, output };
    }, vueOn);
    workflows[file].missing = missing;
  }
  console.log(JSON.stringify({ extensions, frontend, vueSetting, workflows, errors }));
} finally {
  await context.close();
}
