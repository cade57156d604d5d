// The WebAuthn ceremony, and nothing else: convert between JSON (base64url) and the
// ArrayBuffers navigator.credentials wants, and call Anshin's begin/finish endpoints.
"use strict";
(function () {
  const enc = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf)))
    .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const dec = (s) => {
    const b64 = s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4);
    return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)).buffer;
  };

  // Signed-in pages carry the session's CSRF token; requests that change data send it.
  function csrf() {
    const m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.content : null;
  }

  async function call(method, url, body) {
    const headers = {};
    if (body !== undefined) headers["content-type"] = "application/json";
    if (csrf()) headers["x-csrf-token"] = csrf();
    const r = await fetch(url, {
      method,
      credentials: "same-origin",
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.detail || r.statusText);
    return data;
  }

  const post = (url, body) => call("POST", url, body);

  function creationOptions(pk) {
    pk.challenge = dec(pk.challenge);
    pk.user.id = dec(pk.user.id);
    (pk.excludeCredentials || []).forEach((c) => { c.id = dec(c.id); });
    return pk;
  }

  function registration(cred) {
    return {
      id: cred.id,
      rawId: enc(cred.rawId),
      type: cred.type,
      extensions: cred.getClientExtensionResults(),
      response: {
        attestationObject: enc(cred.response.attestationObject),
        clientDataJSON: enc(cred.response.clientDataJSON),
      },
    };
  }

  function show(el, text, isError) {
    el.textContent = text;
    el.classList.toggle("error", !!isError);
    el.hidden = false;
  }

  async function enroll(form, status) {
    const token = new URLSearchParams(location.hash.slice(1)).get("token");
    if (!token) throw new Error(form.dataset.noToken);
    const method = form.elements.method ? form.elements.method.value : "passkey";
    const body = { token };
    if (method === "security_key") {
      body.method = method;
      body.password = form.elements.password.value;
    }
    const begin = await post("/api/v1/auth/enrollment/begin", body);
    const pk = creationOptions(begin.public_key.publicKey);
    show(status, form.dataset.working);
    const cred = await navigator.credentials.create({ publicKey: pk });
    await post("/api/v1/auth/enrollment/finish", {
      ceremony_id: begin.ceremony_id,
      credential_name: form.elements.credential_name.value || null,
      credential: registration(cred),
    });
    // The token has done its job; keep it out of history.
    history.replaceState(null, "", "/enroll");
    location.assign("/portal");
  }

  async function signIn(form, status) {
    const begin = await post("/api/v1/auth/sign-in/begin", { email: form.elements.email.value });
    show(status, form.dataset.working);
    const credential = await assertion(begin.public_key.publicKey);
    await post("/api/v1/auth/sign-in/finish", { ceremony_id: begin.ceremony_id, credential });
    location.assign("/portal");
  }

  async function passwordSignIn(form, status) {
    const begin = await post("/api/v1/auth/password-sign-in/begin", {
      email: form.elements.email.value,
      password: form.elements.password.value,
    });
    show(status, form.dataset.working);
    const credential = await assertion(begin.public_key.publicKey);
    await post("/api/v1/auth/password-sign-in/finish", { ceremony_id: begin.ceremony_id, credential });
    location.assign("/portal");
  }

  // A fresh confirmation with a registered authenticator, for sensitive changes.
  async function confirmPresence() {
    const begin = await post("/api/v1/me/step-up/begin", {});
    const credential = await assertion(begin.public_key.publicKey);
    await call("POST", "/api/v1/me/step-up/finish", { ceremony_id: begin.ceremony_id, credential });
  }

  async function addCredential(form, status) {
    show(status, form.dataset.working);
    await confirmPresence();
    const body = { kind: form.dataset.kind };
    if (form.elements.password) body.password = form.elements.password.value;
    const begin = await post("/api/v1/me/credentials/begin", body);
    const cred = await navigator.credentials.create({ publicKey: creationOptions(begin.public_key.publicKey) });
    await post("/api/v1/me/credentials/finish", {
      ceremony_id: begin.ceremony_id,
      name: form.elements.name.value || null,
      credential: registration(cred),
    });
    location.reload();
  }

  async function removeCredential(form, status) {
    show(status, form.dataset.working);
    await confirmPresence();
    await call("DELETE", `/api/v1/me/credentials/${form.dataset.id}`);
    location.reload();
  }

  async function changePassword(form, status) {
    show(status, form.dataset.working);
    await confirmPresence();
    await call("PUT", "/api/v1/me/password", { new_password: form.elements.new_password.value });
    form.reset();
    show(status, form.dataset.done);
  }

  async function endSession(form) {
    await call("DELETE", `/api/v1/me/sessions/${form.dataset.id}`);
    location.reload();
  }

  async function assertion(pk) {
    pk.challenge = dec(pk.challenge);
    (pk.allowCredentials || []).forEach((c) => { c.id = dec(c.id); });
    const cred = await navigator.credentials.get({ publicKey: pk });
    return {
      id: cred.id,
      rawId: enc(cred.rawId),
      type: cred.type,
      extensions: cred.getClientExtensionResults(),
      response: {
        authenticatorData: enc(cred.response.authenticatorData),
        clientDataJSON: enc(cred.response.clientDataJSON),
        signature: enc(cred.response.signature),
        userHandle: cred.response.userHandle ? enc(cred.response.userHandle) : null,
      },
    };
  }

  async function stepUp(form, status) {
    const flow = new URLSearchParams(location.hash.slice(1)).get("flow");
    if (!flow) throw new Error(form.dataset.noToken);
    const begin = await post("/api/v1/auth/oidc/step-up/begin", { flow_id: flow });
    show(status, form.dataset.working);
    const credential = await assertion(begin.public_key.publicKey);
    await post("/api/v1/auth/oidc/step-up/finish", { flow_id: flow, ceremony_id: begin.ceremony_id, credential });
    location.assign("/portal");
  }

  async function signOut(form) {
    const csrf = document.querySelector('meta[name="csrf-token"]').content;
    await fetch("/api/v1/auth/sign-out", {
      method: "POST",
      credentials: "same-origin",
      headers: { "x-csrf-token": csrf },
    });
    location.assign("/signin");
  }

  // Shared with the administration pages' script (admin.js): the JSON call that carries the
  // session's CSRF token, and the fresh passkey confirmation sensitive actions need.
  window.AnshinWebAuthn = Object.freeze({ call, confirmPresence });

  const actions = {
    enroll,
    "sign-in": signIn,
    "password-sign-in": passwordSignIn,
    "step-up": stepUp,
    "sign-out": signOut,
    "add-credential": addCredential,
    "remove-credential": removeCredential,
    "change-password": changePassword,
    "end-session": endSession,
  };

  // The enrollment form asks for a password only with a security key.
  document.querySelectorAll('input[name="method"]').forEach((radio) => {
    radio.addEventListener("change", () => {
      document.querySelectorAll("[data-when-method]").forEach((el) => {
        const on = el.dataset.whenMethod === radio.form.elements.method.value;
        el.hidden = !on;
        el.querySelectorAll("input").forEach((i) => { i.required = on; });
      });
    });
  });
  document.querySelectorAll("form[data-webauthn]").forEach((form) => {
    const status = form.querySelector(".status") || document.createElement("p");
    const needsWebauthn = !["sign-out", "end-session"].includes(form.dataset.webauthn);
    if (needsWebauthn && !window.PublicKeyCredential) {
      show(status, form.dataset.unsupported, true);
      form.querySelector("button").disabled = true;
    }
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const button = form.querySelector("button");
      button.disabled = true;
      try {
        await actions[form.dataset.webauthn](form, status);
      } catch (e) {
        show(status, `${form.dataset.failed} ${e.message}`, true);
        button.disabled = false;
      }
    });
  });
})();
