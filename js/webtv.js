// ComfyUI-WebTV in the ComfyUI editor: a video player and file link in Save Video (WebTV), and the live
// status of a channel (on air, current clip, uptime, reconnects, link to the local preview page) on the
// channel nodes. Only DOM widgets and node lifecycle hooks: the same in the LiteGraph canvas and in the
// Vue node renderer ("Nodes 2.0"), where nothing is drawn on the canvas by extensions.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

// The pack's HTTP routes (nodes/broadcast/routes.py), in one place. GET CHANNELS_ROUTE answers every
// channel's status by name (a channel that is not running is simply absent: no 404 in the console); it
// is read once per node, after that the server pushes each change as a STATUS_EVENT
// (nodes/broadcast/channel.py).
const CHANNELS_ROUTE = "/webtv/channels";
const STATUS_EVENT = "webtv.channel";
const previewPath = (name) => `${CHANNELS_ROUTE}/${encodeURIComponent(name)}/preview/`;

const VIDEO_NODES = new Set(["WebTVSaveVideo"]);
const CHANNEL_NODES = new Set(["WebTVRTMPChannel", "WebTVChannelAppend", "WebTVChannelStatus", "WebTVChannelStop"]);
const NATIVE_CHECKS_MS = [0, 100, 300, 700, 1500, 3000, 6000];
const VIDEO_FILE = /\.(mp4|webm|mov|mkv)$/i;

function chain(proto, name, after) {
  const original = proto[name];
  proto[name] = function (...args) {
    const result = original?.apply(this, args);
    after.apply(this, args);
    return result;
  };
}

function element(tag, style, attrs = {}) {
  const el = document.createElement(tag);
  Object.assign(el.style, style);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, value);
  return el;
}

function addPanel(node, name, el) {
  const widget = node.addDOMWidget(name, "webtv", el, { serialize: false, hideOnZoom: false });
  widget.serialize = false; // keep positional widgets_values unchanged in saved workflows
  return widget;
}

// ---------------------------------------------------------------- video preview

function viewUrl(file) {
  const query = new URLSearchParams({ filename: file.filename, subfolder: file.subfolder ?? "", type: file.type ?? "output" });
  return api.apiURL(`/view?${query}`);
}

function videoOf(message) {
  return (message?.images ?? []).find((f) => f?.filename && (VIDEO_FILE.test(f.filename) || String(f.format ?? "").startsWith("video/")));
}

function showVideo(node, file) {
  if (!node.webtvVideo) {
    const box = element("div", { display: "flex", flexDirection: "column", gap: "4px", width: "100%" }, { "data-webtv": "video-panel" });
    const video = element("video", { width: "100%", maxHeight: "100%", background: "#000", borderRadius: "4px" }, { "data-webtv": "video" });
    Object.assign(video, { controls: true, loop: true, muted: true, autoplay: true, playsInline: true });
    const link = element("a", { fontSize: "11px", color: "#8ab4f8" }, { "data-webtv": "video-link", target: "_blank", rel: "noopener" });
    box.append(video, link);
    addPanel(node, "webtv_video", box);
    node.webtvVideo = { video, link };
  }
  const url = viewUrl(file);
  const { video, link } = node.webtvVideo;
  if (video.getAttribute("src") !== url) {
    video.src = url;
    video.play?.().catch(() => {}); // autoplay may be refused until the user interacts
  }
  link.href = url;
  link.textContent = [file.subfolder, file.filename].filter(Boolean).join("/");
  for (const ms of NATIVE_CHECKS_MS) setTimeout(() => stepAside(node, file), ms);
}

// Frontends that play "animated" mp4 outputs themselves (a "video-preview" widget on the canvas, a Vue
// media preview in Nodes 2.0) get the node's only player: ours then steps aside and the file link stays.
function nativePlayer(node, file) {
  if (node.videoContainer || node.widgets?.some((w) => w.name === "video-preview")) return true;
  const name = `filename=${encodeURIComponent(file.filename)}`;
  return [...document.querySelectorAll("video")].some((v) => !v.dataset.webtv && (v.currentSrc || v.getAttribute("src") || "").includes(name));
}

function stepAside(node, file) {
  const ours = node.webtvVideo;
  if (!ours || !nativePlayer(node, file)) return;
  ours.video.style.display = "none";
  if (!ours.video.paused) ours.video.pause();
}

// ---------------------------------------------------------------- channel status

const channelNodes = new Set();

function clock(seconds) {
  const s = Math.max(0, Math.floor(Number(seconds) || 0));
  const pad = (n) => String(n).padStart(2, "0");
  const days = Math.floor(s / 86400);
  const hms = `${pad(Math.floor(s / 3600) % 24)}:${pad(Math.floor(s / 60) % 60)}:${pad(s % 60)}`;
  return days ? `${days}d ${hms}` : hms;
}

function clipText(clip) {
  if (!clip) return "none";
  if (clip.slate) return "slate (waiting for clips)";
  const name = String(clip.path ?? "").split(/[\\/]/).pop() || "?";
  return clip.frames ? `${name} (${clip.frame}/${clip.frames})` : name;
}

function channelName(node) {
  return String(node.widgets?.find((w) => w.name === "channel")?.value ?? "").trim();
}

function statusPanel(node) {
  if (node.webtvStatus) return node.webtvStatus;
  const box = element("div", { display: "grid", gridTemplateColumns: "auto 1fr", gap: "2px 8px", fontSize: "12px", padding: "4px", width: "100%" }, { "data-webtv": "status-panel" });
  const fields = {};
  const row = (label, key) => {
    const title = element("span", { opacity: "0.7" });
    title.textContent = label;
    const value = element("span", { overflow: "hidden", textOverflow: "ellipsis", whiteSpace: "nowrap" }, { "data-webtv": key });
    box.append(title, value);
    fields[key] = value;
  };
  const badge = element("span", { gridColumn: "1 / 3", fontWeight: "bold", padding: "2px 6px", borderRadius: "3px", justifySelf: "start" }, { "data-webtv": "state" });
  box.append(badge);
  row("clip", "clip");
  row("uptime", "uptime");
  row("reconnects", "reconnects");
  row("error", "error");
  const preview = element("a", { gridColumn: "1 / 3", color: "#8ab4f8" }, { "data-webtv": "preview", target: "_blank", rel: "noopener" });
  preview.textContent = "Open the local preview";
  box.append(preview);
  addPanel(node, "webtv_status", box);
  node.webtvStatus = { badge, fields, preview };
  return node.webtvStatus;
}

function renderStatus(node, status, name) {
  const { badge, fields, preview } = statusPanel(node);
  const live = status?.state === "live";
  badge.textContent = !status ? "OFF AIR" : live ? "● ON AIR" : String(status.state).toUpperCase();
  badge.style.background = live ? "#c62828" : "#555";
  badge.style.color = "#fff";
  fields.clip.textContent = status ? clipText(status.current_clip) : "none";
  fields.uptime.textContent = status ? clock(status.uptime_s) : "-";
  fields.reconnects.textContent = status ? String(status.reconnects ?? 0) : "-";
  fields.error.textContent = status?.last_error || "none";
  const channel = status?.name || name;
  preview.href = api.apiURL(previewPath(channel));
  preview.style.display = status?.preview_url ? "" : "none";
}

// The state when a node appears (a channel may already be on air); changes come as STATUS_EVENTs.
async function readStatus(node) {
  const name = channelName(node);
  try {
    const response = await api.fetchApi(CHANNELS_ROUTE, { cache: "no-store" });
    const statuses = response.ok ? await response.json() : {};
    if (channelNodes.has(node)) renderStatus(node, statuses[name] ?? null, name);
  } catch {
    renderStatus(node, null, name); // ComfyUI restarting, or the network is down
  }
}

function onStatusEvent(event) {
  const status = event?.detail;
  if (!status?.name) return;
  for (const node of channelNodes) {
    if (channelName(node) === status.name) renderStatus(node, status, status.name);
  }
}

// ---------------------------------------------------------------- registration

app.registerExtension({
  name: "ComfyUI-WebTV.preview",
  setup() {
    api.addEventListener(STATUS_EVENT, onStatusEvent);
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (VIDEO_NODES.has(nodeData.name)) {
      chain(nodeType.prototype, "onExecuted", function (message) {
        const file = videoOf(message);
        if (file) showVideo(this, file);
      });
    }
    if (CHANNEL_NODES.has(nodeData.name)) {
      chain(nodeType.prototype, "onNodeCreated", function () {
        channelNodes.add(this);
        statusPanel(this);
        readStatus(this);
      });
      chain(nodeType.prototype, "onRemoved", function () {
        channelNodes.delete(this);
      });
    }
  },
});
