// Edge NVR: live view, playback with its timeline, and evidence export with progress. Static file: the
// Content-Security-Policy allows no inline script. Video comes as the recorded fMP4 (H.264) in a small
// framing (see appliance/playback/frame.go) and plays through Media Source Extensions; media time is the
// recording timeline itself (seconds since the Unix epoch), so the position shown is when it was recorded.
"use strict";

const TICKS = 90000; // recording timeline: 90 kHz
const KIND_INIT = 1, KIND_MEDIA = 2, KIND_END = 3;
const MAX_FRAME = 32 << 20;

function nvrCsrf() {
  const m = document.querySelector('meta[name="csrf"]');
  return m ? m.content : "";
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// FrameReader splits a fetch body into frames.
class FrameReader {
  constructor(body) {
    this.reader = body.getReader();
    this.buf = new Uint8Array(0);
  }
  async next() {
    for (;;) {
      if (this.buf.length >= 24) {
        const dv = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
        const len = dv.getUint32(4);
        if (len > MAX_FRAME) throw new Error("frame too large");
        if (this.buf.length >= 24 + len) {
          const f = {
            kind: this.buf[0], key: (this.buf[1] & 1) !== 0,
            start: Number(dv.getBigInt64(8)), end: Number(dv.getBigInt64(16)),
            data: this.buf.slice(24, 24 + len),
          };
          this.buf = this.buf.subarray(24 + len);
          return f;
        }
      }
      const { value, done } = await this.reader.read();
      if (done) {
        if (this.buf.length) throw new Error("the stream ended inside a frame");
        return null;
      }
      const b = new Uint8Array(this.buf.length + value.length);
      b.set(this.buf);
      b.set(value, this.buf.length);
      this.buf = b;
    }
  }
  cancel() {
    this.reader.cancel().catch(() => {});
  }
}

// codecOf reads the avc1 codec string (profile, constraints, level) from an init segment's avcC box.
function codecOf(init) {
  for (let i = 4; i + 8 < init.length; i++) {
    if (init[i] === 0x61 && init[i + 1] === 0x76 && init[i + 2] === 0x63 && init[i + 3] === 0x43) { // "avcC"
      const h = (b) => b.toString(16).padStart(2, "0");
      return "avc1." + h(init[i + 5]) + h(init[i + 6]) + h(init[i + 7]);
    }
  }
  return "";
}

// Player feeds one video element through a MediaSource.
class Player {
  constructor(video) {
    this.video = video;
    this.ms = new MediaSource();
    this.sb = null;
    this.codec = "";
    this.url = URL.createObjectURL(this.ms);
    video.src = this.url;
    this.opened = new Promise((res) => this.ms.addEventListener("sourceopen", res, { once: true }));
  }
  close() {
    URL.revokeObjectURL(this.url);
  }
  async op(fn) {
    await this.opened;
    if (!this.sb) return;
    if (this.sb.updating) await new Promise((r) => this.sb.addEventListener("updateend", r, { once: true }));
    await new Promise((res, rej) => {
      const sb = this.sb;
      const done = () => { sb.removeEventListener("error", fail); res(); };
      const fail = () => { sb.removeEventListener("updateend", done); rej(new Error("the browser refused the video")); };
      sb.addEventListener("updateend", done, { once: true });
      sb.addEventListener("error", fail, { once: true });
      fn(sb);
    });
  }
  async init(data) {
    await this.opened;
    const codec = codecOf(data);
    const mime = 'video/mp4; codecs="' + codec + '"';
    if (!codec || !MediaSource.isTypeSupported(mime)) throw new Error("this browser cannot play " + (codec || "this codec"));
    if (!this.sb) {
      this.sb = this.ms.addSourceBuffer(mime);
      this.sb.mode = "segments";
    } else if (codec !== this.codec && this.sb.changeType) {
      this.sb.changeType(mime);
    }
    this.codec = codec;
    await this.op((sb) => sb.appendBuffer(data));
  }
  async append(data) {
    await this.trim();
    await this.op((sb) => sb.appendBuffer(data));
  }
  // trim drops what lies well behind the play position, so a long session stays within the browser's quota.
  async trim() {
    const b = this.sb && this.sb.buffered;
    if (!b || !b.length) return;
    const keep = this.video.currentTime - 30;
    if (b.start(0) < keep - 30) await this.op((sb) => sb.remove(0, keep));
  }
  edge() {
    const b = this.sb && this.sb.buffered;
    return b && b.length ? b.end(b.length - 1) : 0;
  }
  buffered(t) {
    const b = this.sb && this.sb.buffered;
    if (!b) return false;
    for (let i = 0; i < b.length; i++) if (t >= b.start(i) && t < b.end(i)) return true;
    return false;
  }
  ahead() {
    const b = this.sb && this.sb.buffered, t = this.video.currentTime;
    if (!b) return 0;
    for (let i = 0; i < b.length; i++) if (t >= b.start(i) - 0.1 && t <= b.end(i)) return b.end(b.length - 1) - t;
    return 0;
  }
  // skipGap moves the play position over a hole in the recording to the next recorded picture.
  skipGap() {
    const b = this.sb && this.sb.buffered, t = this.video.currentTime;
    if (!b) return;
    for (let i = 0; i < b.length; i++) {
      if (t < b.start(i) - 0.05 && (i === 0 || t >= b.end(i - 1) - 0.15)) {
        this.video.currentTime = b.start(i);
        return;
      }
    }
  }
}

async function errorOf(r) {
  try {
    const j = await r.json();
    return j.error || "HTTP " + r.status;
  } catch (e) {
    return "HTTP " + r.status;
  }
}

// ---- live view ----

async function runLive(video) {
  const status = document.getElementById("live-status");
  const latency = document.getElementById("live-latency");
  const samples = [];
  setInterval(() => {
    if (video.paused || video.readyState < 2) return;
    const l = Date.now() / 1000 - video.currentTime;
    samples.push(l);
    if (samples.length > 20) samples.shift();
    video.dataset.latency = l.toFixed(3);
    video.dataset.latencies = samples.map((x) => x.toFixed(3)).join(",");
    latency.textContent = l.toFixed(2) + " s";
  }, 500);
  for (;;) {
    let r;
    try {
      r = await fetch(video.dataset.live, { credentials: "same-origin", cache: "no-store" });
    } catch (e) {
      status.textContent = "no connection: retrying";
      await sleep(2000);
      continue;
    }
    if (!r.ok) {
      status.textContent = await errorOf(r);
      video.dataset.state = "refused";
      if (r.status === 403 || r.status === 401) return;
      await sleep(3000);
      continue;
    }
    const p = new Player(video);
    const fr = new FrameReader(r.body);
    let started = false;
    status.textContent = "waiting for a key frame";
    try {
      for (;;) {
        const f = await fr.next();
        if (!f) break;
        if (f.kind === KIND_INIT) {
          await p.init(f.data);
        } else if (f.kind === KIND_MEDIA) {
          await p.append(f.data);
          video.dataset.lastFragmentEnd = String(f.end / TICKS);
          const edge = p.edge();
          if (!started) {
            started = true;
            video.currentTime = f.start / TICKS;
            video.play().catch(() => {});
            status.textContent = "live";
            video.dataset.state = "live";
          } else if (edge - video.currentTime > 1.6) {
            // Fell behind (a stall, a hidden tab): back to about one fragment from the newest picture.
            video.currentTime = edge - 1.05;
          }
        } else if (f.kind === KIND_END) {
          status.textContent = new TextDecoder().decode(f.data);
          if (status.textContent.startsWith("denied")) {
            video.dataset.state = "refused";
            fr.cancel();
            return;
          }
          break;
        }
      }
    } catch (e) {
      status.textContent = e.message;
    }
    fr.cancel();
    p.close();
    await sleep(1000);
  }
}

// ---- playback ----

class Playback {
  constructor(section) {
    this.section = section;
    this.camera = section.dataset.camera;
    this.from = Date.parse(section.dataset.from) / 1000;
    this.to = Date.parse(section.dataset.to) / 1000;
    this.video = document.getElementById("playback");
    this.timeline = document.getElementById("timeline");
    this.cursor = document.getElementById("timeline-cursor");
    this.scrub = document.getElementById("scrub-time");
    this.status = document.getElementById("playback-status");
    this.clock = document.getElementById("playback-time");
    this.speed = document.getElementById("speed");
    this.gen = 0;
    this.player = null;
    this.reader = null;
    this.bind();
    this.loadTimeline();
    setInterval(() => this.tick(), 250);
  }

  fraction(t) {
    return Math.min(1, Math.max(0, (t - this.from) / (this.to - this.from)));
  }

  timeAt(clientX) {
    const r = this.timeline.getBoundingClientRect();
    return this.from + Math.min(1, Math.max(0, (clientX - r.left) / r.width)) * (this.to - this.from);
  }

  async loadTimeline() {
    const q = "?from=" + encodeURIComponent(this.section.dataset.from) + "&to=" + encodeURIComponent(this.section.dataset.to);
    const r = await fetch("/api/v1/cameras/" + encodeURIComponent(this.camera) + "/timeline" + q, { credentials: "same-origin" });
    if (!r.ok) {
      this.status.textContent = await errorOf(r);
      return;
    }
    const tl = await r.json();
    const bar = (cls, a, b, title) => {
      const d = document.createElement("div");
      d.className = cls;
      d.style.left = (100 * this.fraction(a)) + "%";
      if (cls !== "alarm") d.style.width = Math.max(0.15, 100 * (this.fraction(b) - this.fraction(a))) + "%";
      d.title = title;
      this.timeline.appendChild(d);
    };
    const iso = (s) => new Date(s * 1000).toISOString().replace(".000Z", "Z");
    for (const s of tl.recorded) {
      const a = Date.parse(s.start) / 1000, b = Date.parse(s.end) / 1000;
      bar("rec", a, b, "recorded " + iso(a) + " to " + iso(b));
    }
    for (const s of tl.gaps) {
      const a = Date.parse(s.start) / 1000, b = Date.parse(s.end) / 1000;
      bar("gap", a, b, "nothing recorded " + iso(a) + " to " + iso(b));
    }
    for (const al of tl.alarms) {
      const a = Date.parse(al.Time) / 1000;
      bar("alarm", a, a, al.Kind + ": " + al.Text + " at " + iso(a));
    }
    document.getElementById("timeline-range").textContent = iso(this.from) + " – " + iso(this.to);
    this.timeline.dataset.spans = String(tl.recorded.length);
    this.timeline.dataset.gaps = String(tl.gaps.length);
    this.timeline.dataset.alarms = String(tl.alarms.length);
    if (tl.recorded.length) this.seek(Date.parse(tl.recorded[0].start) / 1000);
  }

  bind() {
    let dragging = false, lastSeek = 0;
    const show = (t, x) => {
      const r = this.timeline.getBoundingClientRect();
      this.scrub.textContent = new Date(t * 1000).toISOString().slice(11, 19);
      this.scrub.style.left = Math.min(r.width - 70, Math.max(0, x - r.left)) + "px";
      this.cursor.style.left = (100 * this.fraction(t)) + "%";
    };
    this.timeline.addEventListener("pointerdown", (ev) => {
      dragging = true;
      this.timeline.setPointerCapture(ev.pointerId);
      show(this.timeAt(ev.clientX), ev.clientX);
    });
    this.timeline.addEventListener("pointermove", (ev) => {
      if (!dragging) return;
      const t = this.timeAt(ev.clientX);
      show(t, ev.clientX);
      // Scrubbing: the picture follows the pointer, at most a few requests a second.
      if (Date.now() - lastSeek > 400) {
        lastSeek = Date.now();
        this.seek(t, true);
      }
    });
    this.timeline.addEventListener("pointerup", (ev) => {
      if (!dragging) return;
      dragging = false;
      this.scrub.textContent = "";
      this.seek(this.timeAt(ev.clientX));
    });
    document.getElementById("seek-go").addEventListener("click", () => {
      const v = document.getElementById("seek-time").value;
      const t = Date.parse(v.length === 16 ? v + ":00Z" : v + "Z") / 1000;
      if (!isNaN(t)) this.seek(t);
    });
    this.speed.addEventListener("change", () => {
      this.video.playbackRate = Number(this.speed.value);
    });
    const pp = document.getElementById("play-pause");
    pp.addEventListener("click", () => {
      if (this.video.paused) this.video.play().catch(() => {});
      else this.video.pause();
    });
    this.video.addEventListener("play", () => { pp.textContent = "Pause"; });
    this.video.addEventListener("pause", () => { pp.textContent = "Play"; });
    this.video.addEventListener("waiting", () => this.player && this.player.skipGap());
  }

  tick() {
    const t = this.video.currentTime;
    if (t > 0) {
      this.clock.textContent = new Date(t * 1000).toISOString().replace("T", " ").slice(0, 23) + "Z";
      if (!this.scrub.textContent) this.cursor.style.left = (100 * this.fraction(t)) + "%";
    }
    if (this.player) this.player.skipGap();
  }

  // seek plays from instant t (seconds): within what is buffered it only moves the position; otherwise it
  // asks the appliance for the recording from t on (a decided and audited request).
  seek(t, scrubbing) {
    this.video.dataset.requested = String(t);
    delete this.video.dataset.presented;
    if (this.player && this.player.buffered(t)) {
      this.video.currentTime = t;
      this.watchPresented(t);
      return;
    }
    this.stream(t, ++this.gen, scrubbing).catch((e) => { this.status.textContent = e.message; });
  }

  // watchPresented records the media time of the first frame presented after a seek.
  watchPresented(t) {
    const v = this.video;
    if (!v.requestVideoFrameCallback) return;
    v.requestVideoFrameCallback((now, meta) => {
      if (v.dataset.requested === String(t)) v.dataset.presented = String(meta.mediaTime);
    });
  }

  async stream(t, gen, scrubbing) {
    if (this.reader) this.reader.cancel();
    if (this.player) this.player.close();
    const p = new Player(this.video);
    this.player = p;
    this.video.playbackRate = Number(this.speed.value);
    let at = t, first = true;
    this.status.textContent = "loading";
    while (gen === this.gen) {
      const url = "/api/v1/cameras/" + encodeURIComponent(this.camera) + "/playback?at=" + encodeURIComponent(new Date(at * 1000).toISOString());
      const r = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (gen !== this.gen) return;
      if (!r.ok) {
        this.status.textContent = await errorOf(r);
        this.video.dataset.state = r.status === 403 ? "refused" : "ended";
        if (r.status === 404 && !first && Date.now() / 1000 - at < 60) {
          await sleep(2000); // near the present: wait for the recorder
          continue;
        }
        return;
      }
      const fr = new FrameReader(r.body);
      this.reader = fr;
      let next = 0;
      for (;;) {
        // Pace: read on only while less than about 20 s of picture lie ahead.
        while (gen === this.gen && p.ahead() > 20 * Math.max(1, this.video.playbackRate)) await sleep(250);
        if (gen !== this.gen) { fr.cancel(); return; }
        const f = await fr.next();
        if (!f) break;
        if (f.kind === KIND_INIT) {
          await p.init(f.data);
        } else if (f.kind === KIND_MEDIA) {
          await p.append(f.data);
          if (first) {
            first = false;
            const s = f.start / TICKS;
            this.video.currentTime = Math.max(s, Math.min(t, f.end / TICKS - 0.01));
            this.watchPresented(t);
            this.status.textContent = "";
            this.video.dataset.state = "playing";
            if (!scrubbing || !this.video.paused) this.video.play().catch(() => {});
          }
        } else if (f.kind === KIND_END) {
          next = f.start;
          break;
        }
      }
      if (!next) {
        this.status.textContent = "end of the recording";
        return;
      }
      at = Math.ceil(next / 90) / 1000; // milliseconds, rounded up: no fragment twice
    }
  }
}

// ---- downloads with progress (evidence exports) ----

function fileNameOf(r, fallback) {
  const m = /filename="([^"]+)"/.exec(r.headers.get("Content-Disposition") || "");
  return m ? m[1] : fallback;
}

async function download(r, form) {
  const prog = form.querySelector("progress");
  const status = form.querySelector('[role="status"]');
  const total = Number(r.headers.get("X-Export-Estimate")) || 0;
  prog.hidden = false;
  prog.max = Math.max(total, 1);
  prog.value = 0;
  const reader = r.body.getReader();
  const parts = [];
  let n = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    parts.push(value);
    n += value.length;
    if (n > prog.max) prog.max = n;
    prog.value = n;
    status.textContent = "exporting: " + (n / 1048576).toFixed(1) + " MiB" + (total ? " of about " + (total / 1048576).toFixed(1) + " MiB" : "");
  }
  prog.max = Math.max(n, 1);
  prog.value = prog.max;
  const name = fileNameOf(r, "export.zip");
  const url = URL.createObjectURL(new Blob(parts, { type: "application/octet-stream" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  status.textContent = "downloaded " + name + " (" + (n / 1048576).toFixed(1) + " MiB)";
  form.dataset.done = name;
}

function toRFC3339(v) {
  return v.length === 16 ? v + ":00Z" : v + "Z";
}

function bindExport(form) {
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const status = form.querySelector('[role="status"]');
    const fd = new FormData(form);
    const body = {
      from: toRFC3339(String(fd.get("from"))), to: toRFC3339(String(fd.get("to"))),
      reason: String(fd.get("reason") || ""), passphrase: String(fd.get("passphrase") || ""),
    };
    // The export page's form names several cameras; a camera page's form posts to that camera's URL.
    const cams = fd.getAll("camera").map(String);
    if (form.querySelector('input[name="camera"]')) {
      if (cams.length === 0) {
        status.textContent = "choose at least one camera";
        return;
      }
      body.cameras = cams;
    }
    status.textContent = "starting the export";
    try {
      const r = await fetch(form.dataset.api, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": nvrCsrf() },
        body: JSON.stringify(body),
      });
      if (r.status === 202) {
        const j = await r.json();
        window.location = "/approvals/" + encodeURIComponent(j.approval);
        return;
      }
      if (!r.ok) {
        status.textContent = await errorOf(r);
        return;
      }
      await download(r, form);
    } catch (e) {
      status.textContent = "the export failed: " + e.message;
    }
  });
}

function bindDownload(form) {
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const status = form.querySelector('[role="status"]');
    status.textContent = "starting the export";
    try {
      const r = await fetch(form.action, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/x-www-form-urlencoded", "X-CSRF-Token": nvrCsrf() },
        body: new URLSearchParams(new FormData(form)),
      });
      if (!r.ok) {
        status.textContent = "HTTP " + r.status + ": the approval is missing, used or expired";
        return;
      }
      await download(r, form);
    } catch (e) {
      status.textContent = "the export failed: " + e.message;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const live = document.getElementById("live");
  if (live) runLive(live);
  const pb = document.getElementById("playback-view");
  if (pb) window.nvrPlayback = new Playback(pb);
  const ex = document.getElementById("export-form");
  if (ex && ex.dataset.api) bindExport(ex);
  document.querySelectorAll("form[data-download]").forEach(bindDownload);
});
