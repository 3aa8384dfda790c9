// Loads UI workflows into a real ComfyUI frontend in Debian's headless Chromium, the way a user's drop
// does (app.loadGraphData), and reports per workflow: whether the "Some Nodes Are Missing" dialog
// appeared, the node count on the canvas, and the API prompt the frontend builds (app.graphToPrompt).
// Usage: node comfyui_workflows.mjs <comfyui url> <fresh profile dir> <workflow.json>...; prints one JSON line.
import { readFileSync } from "node:fs";
import { collectErrors, openPage } from "./chromium.mjs";

const [url, profile, ...files] = process.argv.slice(2);
const errors = [];
const { context, page } = await openPage(profile);
try {
  collectErrors(page, errors);
  await page.goto(url);
  await page.waitForFunction(() => window.app?.graph && window.app.extensions?.length > 0, null, { timeout: 90000 });
  const extensions = await page.evaluate(() => window.app.extensions.map((e) => e.name));
  const workflows = {};
  for (const file of files) {
    const workflow = JSON.parse(readFileSync(file, "utf8"));
    await page.evaluate(async (data) => window.app.loadGraphData(data), workflow);
    await page.waitForTimeout(1000);
    const dialog = page.locator(".p-dialog").filter({ hasText: "Some Nodes Are Missing" });
    const missingDialog = (await dialog.count()) > 0;
    if (missingDialog) await page.keyboard.press("Escape");
    workflows[file] = await page.evaluate(async () => {
      const { output } = await window.app.graphToPrompt();
      return { nodes: window.app.graph._nodes.length, output };
    });
    workflows[file].missingDialog = missingDialog;
  }
  console.log(JSON.stringify({ extensions, workflows, errors }));
} finally {
  await context.close();
}
