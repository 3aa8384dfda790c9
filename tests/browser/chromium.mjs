// Debian's headless Chromium for the browser tests: a fresh profile, no background traffic, and a page
// from which nothing leaves 127.0.0.1.
import { chromium } from "playwright-core";

/** Launch Chromium on `profile` and return {context, page}; `onBlocked(url)` hears every aborted request;
 * `viewport` ({width, height}) replaces Playwright's 1280 x 720. */
export async function openPage(profile, onBlocked = () => {}, viewport = undefined) {
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    ...(viewport ? { viewport } : {}),
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
      "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required",
    ],
  });
  const page = context.pages()[0] || (await context.newPage());
  await page.route("**/*", (route) => {
    if (new URL(route.request().url()).hostname === "127.0.0.1") return route.continue();
    onBlocked(route.request().url());
    return route.abort();
  });
  return { context, page };
}

/** Collect the page's uncaught errors and console errors into `errors`. */
export function collectErrors(page, errors) {
  page.on("pageerror", (error) => errors.push(`pageerror: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(`console: ${message.text()} [${message.location().url}]`);
  });
}
