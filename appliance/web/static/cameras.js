// Edge NVR: the camera management page. No inline script is allowed by the Content-Security-Policy;
// this file only improves the server-rendered page: it checks the firmware image's SHA-256 in the
// browser before upload, narrows the rollout to the chosen model, and follows a running rollout.
"use strict";

function hex(buf) {
  return Array.from(new Uint8Array(buf)).map((b) => b.toString(16).padStart(2, "0")).join("");
}

function normalizeSum(s) {
  return s.replace(/[\s:]/g, "").toLowerCase();
}

// The vendor's checksum is typed from the vendor's site; the browser shows whether the chosen file
// matches it. The appliance checks again on upload, and the rollout checks once more.
function setupChecksum() {
  const file = document.getElementById("rollout-image");
  const vendor = document.getElementById("rollout-sha256");
  const out = document.getElementById("rollout-sum");
  if (!file || !vendor || !out || !window.crypto || !window.crypto.subtle) return;
  let computed = "";
  const show = () => {
    if (!computed) {
      out.textContent = "";
      return;
    }
    const want = normalizeSum(vendor.value);
    out.className = "";
    if (!want) {
      out.textContent = "SHA-256 of the file: " + computed + " (type the vendor's checksum to compare)";
      out.classList.add("muted");
    } else if (want === computed) {
      out.textContent = "The file matches the vendor's checksum.";
      out.classList.add("message");
    } else {
      out.textContent = "The file does NOT match the vendor's checksum (file: " + computed + ").";
      out.classList.add("error");
    }
  };
  file.addEventListener("change", async () => {
    computed = "";
    show();
    const f = file.files && file.files[0];
    if (!f) return;
    out.textContent = "Computing the SHA-256 of the file…";
    computed = hex(await crypto.subtle.digest("SHA-256", await f.arrayBuffer()));
    show();
  });
  vendor.addEventListener("input", show);
}

// Choosing a model ticks the cameras of that model only.
function setupModel() {
  const model = document.getElementById("rollout-model");
  if (!model) return;
  const apply = () => {
    document.querySelectorAll('#rollout-form input[name="camera"]').forEach((cb) => {
      cb.checked = cb.dataset.model === model.value;
    });
  };
  model.addEventListener("change", apply);
  apply();
}

function cell(tr, text) {
  const td = document.createElement("td");
  td.textContent = text || "";
  tr.appendChild(td);
}

// While a rollout runs, its per-camera status is fetched every few seconds and the table redrawn.
function followRollouts() {
  const box = document.getElementById("rollouts");
  if (!box || !box.dataset.running) return;
  const tick = async () => {
    let jobs;
    try {
      const r = await fetch("/api/v1/cameras/firmware/rollouts", { credentials: "same-origin" });
      if (!r.ok) return;
      jobs = await r.json();
    } catch (e) {
      return;
    }
    let running = false;
    for (const j of jobs) {
      const div = document.getElementById("rollout-" + j.id);
      if (!div) continue;
      running = running || j.state === "running";
      const st = div.querySelector(".rollout-state");
      st.textContent = j.state;
      st.className = "rollout-state " + (j.state === "done" ? "ok" : j.state === "running" ? "" : "bad");
      div.querySelector(".rollout-error").textContent = j.error || "";
      const tbody = div.querySelector("tbody");
      tbody.replaceChildren();
      for (const c of (j.report && j.report.cameras) || []) {
        const tr = document.createElement("tr");
        [c.camera, c.stage, c.from, c.to, c.state, c.error].forEach((t) => cell(tr, t));
        tbody.appendChild(tr);
      }
    }
    if (running) {
      setTimeout(tick, 3000);
    } else {
      delete box.dataset.running;
      const b = document.getElementById("rollout");
      if (b) b.disabled = false;
    }
  };
  setTimeout(tick, 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  setupChecksum();
  setupModel();
  followRollouts();
});
