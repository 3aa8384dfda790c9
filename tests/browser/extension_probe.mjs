// Opens a test page in Debian's headless Chromium, waits for the page's `window.testResult` promise and
// prints one JSON line: {result, errors}. Usage: node extension_probe.mjs <page url> <fresh profile dir>
import { collectErrors, openPage } from "./chromium.mjs";

const [url, profile] = process.argv.slice(2);
const errors = [];
const { context, page } = await openPage(profile, (blocked) => errors.push(`blocked: ${blocked}`));
try {
  collectErrors(page, errors);
  await page.goto(url);
  await page.waitForFunction(() => window.testResult !== undefined, null, { timeout: 60000 });
  const result = await page.evaluate(() => window.testResult);
  console.log(JSON.stringify({ result, errors }));
} finally {
  await context.close();
}
