// Edge NVR: the only script of the web pages. No inline script is allowed by the Content-Security-Policy;
// behaviour hangs off data- attributes.
"use strict";

function csrfToken() {
  const m = document.querySelector('meta[name="csrf"]');
  return m ? m.content : "";
}

function b64urlToBuf(s) {
  s = s.replace(/-/g, "+").replace(/_/g, "/");
  while (s.length % 4) s += "=";
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out.buffer;
}

function bufToB64url(buf) {
  const bytes = new Uint8Array(buf);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

async function post(url, body) {
  const r = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
    body: body === undefined ? "{}" : JSON.stringify(body),
  });
  const j = await r.json();
  if (!r.ok) throw new Error(j.error || ("HTTP " + r.status));
  return j;
}

async function webauthnRegister(status) {
  const opts = await post("/account/webauthn/begin");
  const pk = opts.publicKey;
  pk.challenge = b64urlToBuf(pk.challenge);
  pk.user.id = b64urlToBuf(pk.user.id);
  (pk.excludeCredentials || []).forEach((c) => { c.id = b64urlToBuf(c.id); });
  const cred = await navigator.credentials.create({ publicKey: pk });
  const res = await post("/account/webauthn/finish", {
    id: cred.id, rawId: bufToB64url(cred.rawId), type: cred.type,
    response: {
      clientDataJSON: bufToB64url(cred.response.clientDataJSON),
      attestationObject: bufToB64url(cred.response.attestationObject),
    },
  });
  status.textContent = "Security key added.";
  window.location = res.next;
}

async function webauthnLogin() {
  const opts = await post("/login/webauthn/begin");
  const pk = opts.publicKey;
  pk.challenge = b64urlToBuf(pk.challenge);
  (pk.allowCredentials || []).forEach((c) => { c.id = b64urlToBuf(c.id); });
  const cred = await navigator.credentials.get({ publicKey: pk });
  const res = await post("/login/webauthn/finish", {
    id: cred.id, rawId: bufToB64url(cred.rawId), type: cred.type,
    response: {
      clientDataJSON: bufToB64url(cred.response.clientDataJSON),
      authenticatorData: bufToB64url(cred.response.authenticatorData),
      signature: bufToB64url(cred.response.signature),
      userHandle: cred.response.userHandle ? bufToB64url(cred.response.userHandle) : null,
    },
  });
  window.location = res.next;
}

document.addEventListener("DOMContentLoaded", () => {
  const status = document.getElementById("webauthn-result") || document.getElementById("error");
  const report = (e) => {
    if (status) status.textContent = "Security key: " + e.message;
  };
  const reg = document.querySelector('[data-webauthn="register"]');
  if (reg) reg.addEventListener("click", () => webauthnRegister(status || reg).catch(report));
  const login = document.querySelector('[data-webauthn="login"]');
  if (login) login.addEventListener("click", () => webauthnLogin().catch(report));
  document.querySelectorAll("form[data-confirm]").forEach((f) => {
    f.addEventListener("submit", (ev) => {
      if (!window.confirm(f.dataset.confirm)) ev.preventDefault();
    });
  });
});
