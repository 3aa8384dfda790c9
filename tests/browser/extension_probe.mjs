// Opens a test page in Debian's headless Chromium, waits for the page's `window.testResult` promise and
// prints one JSON line: {result, errors}. Usage: node extension_probe.mjs <page url> <fresh profile dir>
import { chromium } from "playwright-core";

const [url, profile] = process.argv.slice(2);
const errors = [];
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required",
  ],
});
try {
  const page = context.pages()[0] || (await context.newPage());
  page.on("pageerror", (error) => errors.push(`pageerror: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(`console: ${message.text()} [${message.location().url}]`);
  });
  await page.route("**/*", (route) => {
    const host = new URL(route.request().url()).hostname;
    if (host === "127.0.0.1") return route.continue();
    errors.push(`blocked: ${route.request().url()}`);
    return route.abort();
  });
  await page.goto(url);
  await page.waitForFunction(() => window.testResult !== undefined, null, { timeout: 60000 });
  const result = await page.evaluate(() => window.testResult);
  console.log(JSON.stringify({ result, errors }));
} finally {
  await context.close();
}
