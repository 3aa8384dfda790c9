// Opens the channel's preview page in Debian's headless Chromium and reports whether the video plays.
// Usage: node preview_plays.mjs <page url> <fresh profile dir>; prints one JSON line.
import { openPage } from "./chromium.mjs";

const [url, profile] = process.argv.slice(2);
const blocked = [];
// Nothing may leave 127.0.0.1: the player must come with the pack.
const { context, page } = await openPage(profile, (request) => blocked.push(request));
try {
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
