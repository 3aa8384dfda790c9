// Loads UI workflows into a real ComfyUI frontend in Debian's headless Chromium, the way a user's drop
// does (app.loadGraphData), in the LiteGraph canvas or the Vue node renderer ("Nodes 2.0", setting
// Comfy.VueNodes.Enabled, set on the server before the page opens), and reports per workflow: the
// missing-node warning it shows (1.49+: the `[data-testid="error-overlay"]` card "Missing node: TYPE";
// older: the "Some Nodes Are Missing" dialog), the node count on the canvas, the nodes rendered as DOM
// elements, and the API prompt the frontend builds (app.graphToPrompt).
// Usage: node comfyui_workflows.mjs <comfyui url> <fresh profile dir> <on|off> <workflow.json>...
// Prints one JSON line.
import { readFileSync } from "node:fs";
import { collectErrors, openPage } from "./chromium.mjs";

const [url, profile, vue, ...files] = process.argv.slice(2);
const vueOn = vue === "on";
const errors = [];
const setting = await fetch(new URL("api/settings/Comfy.VueNodes.Enabled", url), { method: "POST", body: JSON.stringify(vueOn) });
if (!setting.ok) throw new Error(`setting Comfy.VueNodes.Enabled: HTTP ${setting.status}`);
const { context, page } = await openPage(profile);

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
    workflows[file] = await page.evaluate(async () => {
      const { output } = await window.app.graphToPrompt();
      return { nodes: window.app.graph._nodes.length, domNodes: document.querySelectorAll("[data-node-id]").length, output };
    });
    workflows[file].missing = missing;
  }
  console.log(JSON.stringify({ extensions, frontend, vueSetting, workflows, errors }));
} finally {
  await context.close();
}
