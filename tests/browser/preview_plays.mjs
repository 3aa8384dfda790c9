// Opens the channel's preview page in Debian's headless Chromium and reports whether the video plays.
// Usage: node preview_plays.mjs <page url> <fresh profile dir>; prints one JSON line.
import { chromium } from "playwright-core";

const [url, profile] = process.argv.slice(2);
const blocked = [];
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
  // Nothing may leave 127.0.0.1: the player must come with the pack.
  await page.route("**/*", (route) => {
    const host = new URL(route.request().url()).hostname;
    if (host === "127.0.0.1") return route.continue();
    blocked.push(route.request().url());
    return route.abort();
  });
  await page.goto(url);
  await page.waitForFunction(() => document.querySelector("video").currentTime > 0.5, null, { timeout: 30000 });
  const sample = () => page.evaluate(() => {
    const v = document.querySelector("video");
    return { time: v.currentTime, paused: v.paused, width: v.videoWidth, height: v.videoHeight, ready: v.readyState,
             player: window.webtvPlayer };
  });
  const first = await sample();
  await page.waitForTimeout(2500);
  const second = await sample();
  console.log(JSON.stringify({ first, second, blocked }));
} finally {
  await context.close();
}
