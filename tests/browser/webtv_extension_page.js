// Loads js/webtv.js the way ComfyUI does (as /extensions/<pack>/webtv.js, importing /scripts/app.js),
// drives its hooks with stand-in nodes and returns what the DOM shows as window.testResult.
import { api } from "/scripts/api.js";
import { app } from "/scripts/app.js";
import { StandInNode } from "/comfyui_standin/node.js";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(check, ms = 10000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (check()) return true;
    await sleep(50);
  }
  return false;
}

function panel(node) {
  const text = (key) => node.el.querySelector(`[data-webtv=${key}]`)?.textContent ?? null;
  const preview = node.el.querySelector("[data-webtv=preview]");
  return {
    state: text("state"), clip: text("clip"), uptime: text("uptime"), reconnects: text("reconnects"), error: text("error"),
    preview: preview?.getAttribute("href") ?? null, previewShown: preview ? preview.style.display !== "none" : null,
    panels: node.el.querySelectorAll("[data-webtv=status-panel]").length,
  };
}

const statusRequests = async () => (await (await fetch("/requests")).json()).length;

async function run() {
  const out = {};
  await import("/extensions/ComfyUI-WebTV/webtv.js");
  out.extensions = app.extensions.map((e) => e.name);
  const extension = app.extensions[0];

  // Save Video: the frontend's own onExecuted still runs, and a player shows the mp4 from /view.
  class SaveVideo extends StandInNode {}
  SaveVideo.prototype.onExecuted = function (message) { this.frontendSaw = message; };
  await extension.beforeRegisterNodeDef(SaveVideo, { name: "WebTVSaveVideo" }, app);
  const save = new SaveVideo();
  save.onExecuted({ images: [{ filename: "clip_00001_.mp4", subfolder: "WebTV", type: "output", format: "video/mp4" }], animated: [true] });
  const video = save.el.querySelector("video[data-webtv=video]");
  await new Promise((resolve) => {
    if (video.readyState >= 1) return resolve();
    video.addEventListener("loadedmetadata", resolve);
    video.addEventListener("error", resolve);
    setTimeout(resolve, 15000);
  });
  await until(() => video.currentTime > 0 || video.error, 5000);
  out.video = {
    src: video.getAttribute("src"), readyState: video.readyState, width: video.videoWidth, height: video.videoHeight,
    duration: video.duration, playing: video.currentTime > 0, error: video.error?.code ?? null, loop: video.loop,
    link: save.el.querySelector("[data-webtv=video-link]").textContent,
    frontendSaw: Boolean(save.frontendSaw), widgets: save.widgets.map((w) => [w.name, w.serialize]),
  };
  save.onExecuted({ images: [{ filename: "clip_00002_.mp4", subfolder: "WebTV", type: "output" }] });
  save.onExecuted({ images: [{ filename: "still_00001_.png", subfolder: "", type: "output" }] });
  out.videoAfter = { players: save.el.querySelectorAll("video").length, src: video.getAttribute("src") };
  await sleep(1000);
  out.ownPlayerShown = video.style.display !== "none";
  // A frontend with its own player for the mp4 (a Vue media preview, or the canvas "video-preview" widget):
  // ours steps aside, found through the DOM alone (nothing is drawn).
  const native = document.createElement("video");
  native.src = "/api/view?filename=clip_00003_.mp4&subfolder=WebTV&type=output";
  document.body.append(native);
  save.onExecuted({ images: [{ filename: "clip_00003_.mp4", subfolder: "WebTV", type: "output", format: "video/mp4" }], animated: [true] });
  await until(() => video.style.display === "none", 8000);
  out.withNativePlayer = { shown: video.style.display !== "none", paused: video.paused, link: save.el.querySelector("[data-webtv=video-link]").textContent };
  const widgetNative = new SaveVideo();
  widgetNative.onExecuted({ images: [{ filename: "clip_00004_.mp4", subfolder: "WebTV", type: "output" }] });
  widgetNative.widgets.push({ name: "video-preview" }); // what the canvas frontend adds on the next frames
  await until(() => widgetNative.el.querySelector("video[data-webtv=video]").style.display === "none", 8000);
  out.withNativeWidget = widgetNative.el.querySelector("video[data-webtv=video]").style.display !== "none";
  const noVideo = new SaveVideo();
  noVideo.onExecuted({ images: [{ filename: "still_00001_.png", subfolder: "", type: "output" }] });
  out.imageOnlyPlayers = noVideo.el.querySelectorAll("video").length;

  // A channel node reads the status route once; after that the server pushes changes as events.
  await extension.setup?.(app);
  const WAITING = await (await fetch("/waiting")).json(); // the test's second status
  const push = (status) => api.dispatchEvent(new CustomEvent("webtv.channel", { detail: status }));
  class Channel extends StandInNode {}
  await extension.beforeRegisterNodeDef(Channel, { name: "WebTVRTMPChannel" }, app);
  const channel = new Channel();
  channel.widgets.push({ name: "channel", value: "webtv" });
  channel.onNodeCreated();
  await until(() => panel(channel).state && panel(channel).state !== "");
  out.first = panel(channel);
  out.firstRequests = await statusRequests();
  push(WAITING);
  out.second = panel(channel);
  push({ ...WAITING, name: "other", state: "live" });
  out.otherChannelIgnored = panel(channel).state === out.second.state;
  push({ name: "webtv", state: "reconnecting", uptime_s: 90061.5, reconnects: 7, current_clip: { slate: true }, last_error: "rtmp: connection refused", preview_url: null });
  out.executed = panel(channel);
  channel.onExecuted?.({ text: ["summary"] }); // a channel node's ui output is text only

  // An unknown channel is off air; a removed node no longer listens; nothing polls.
  class Status extends StandInNode {}
  await extension.beforeRegisterNodeDef(Status, { name: "WebTVChannelStatus" }, app);
  const missing = new Status();
  missing.widgets.push({ name: "channel", value: "nosuch" });
  missing.onNodeCreated();
  await until(() => panel(missing).state === "OFF AIR");
  out.missing = panel(missing);
  channel.onRemoved();
  missing.onRemoved();
  push({ ...WAITING, state: "stopped" });
  out.removedUnchanged = panel(channel).state === "RECONNECTING";
  await sleep(300);
  const before = await statusRequests();
  await sleep(2600);
  out.requestsAfterRemoval = (await statusRequests()) - before;
  out.requests = await statusRequests();

  // Other node types are left alone.
  class Other {}
  const own = function () {};
  Other.prototype.onExecuted = own;
  await extension.beforeRegisterNodeDef(Other, { name: "KSampler" }, app);
  out.otherUntouched = Other.prototype.onExecuted === own && !("onNodeCreated" in Other.prototype);
  return out;
}

window.testResult = run().catch((error) => ({ failed: String(error?.stack ?? error) }));
