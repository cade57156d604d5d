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

  async function post(url, body) {
    const r = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(data.detail || r.statusText);
    return data;
  }

  function show(el, text, isError) {
    el.textContent = text;
    el.classList.toggle("error", !!isError);
    el.hidden = false;
  }

  async function enroll(form, status) {
    const token = new URLSearchParams(location.hash.slice(1)).get("token");
    if (!token) throw new Error(form.dataset.noToken);
    const begin = await post("/api/v1/auth/enrollment/begin", { token });
    const pk = begin.public_key.publicKey;
    pk.challenge = dec(pk.challenge);
    pk.user.id = dec(pk.user.id);
    (pk.excludeCredentials || []).forEach((c) => { c.id = dec(c.id); });
    show(status, form.dataset.working);
    const cred = await navigator.credentials.create({ publicKey: pk });
    await post("/api/v1/auth/enrollment/finish", {
      ceremony_id: begin.ceremony_id,
      credential_name: form.elements.credential_name.value || null,
      credential: {
        id: cred.id,
        rawId: enc(cred.rawId),
        type: cred.type,
        extensions: cred.getClientExtensionResults(),
        response: {
          attestationObject: enc(cred.response.attestationObject),
          clientDataJSON: enc(cred.response.clientDataJSON),
        },
      },
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

  const actions = { enroll, "sign-in": signIn, "step-up": stepUp, "sign-out": signOut };
  document.querySelectorAll("form[data-webauthn]").forEach((form) => {
    const status = form.querySelector(".status") || document.createElement("p");
    if (form.dataset.webauthn !== "sign-out" && !window.PublicKeyCredential) {
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
