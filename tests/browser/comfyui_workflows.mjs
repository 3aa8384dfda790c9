// Loads UI workflows into a real ComfyUI frontend in Debian's headless Chromium, the way a user's drop
// does (app.loadGraphData), and reports per workflow: whether the "Some Nodes Are Missing" dialog
// appeared, the node count on the canvas, and the API prompt the frontend builds (app.graphToPrompt).
// Usage: node comfyui_workflows.mjs <comfyui url> <fresh profile dir> <workflow.json>...; prints one JSON line.
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const [url, profile, ...files] = process.argv.slice(2);
const errors = [];
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
});
try {
  const page = context.pages()[0] || (await context.newPage());
  page.on("pageerror", (error) => errors.push(`pageerror: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(`console: ${message.text()} [${message.location().url}]`);
  });
  await page.route("**/*", (route) => {
    const host = new URL(route.request().url()).hostname;
    return host === "127.0.0.1" ? route.continue() : route.abort();
  });
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
