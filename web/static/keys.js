// The key page (/keys): rotate now, register and remove a tenant's own key (BYOK). Each
// form[data-keys] calls Anshin's JSON API with the session cookie and the page's CSRF token
// (x-csrf-token), then reloads; a refusal shows the problem's `detail` (RFC 9457).
// These are sensitive key operations: when the API answers
// urn:anshin:problem:step-up-required, the page asks for the passkey (webauthn.js's
// confirmPresence: /api/v1/me/step-up/begin and finish) and sends the request once more.
"use strict";
(function () {
  const page = document.getElementById("keys");
  if (!page) return;

  const STEP_UP = "urn:anshin:problem:step-up-required";

  function csrf() {
    const m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.content : null;
  }

  async function call(method, url, body) {
    const headers = { accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (csrf()) headers["x-csrf-token"] = csrf();
    const r = await fetch(url, {
      method,
      credentials: "same-origin",
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) {
      const e = new Error(data.detail || data.title || r.statusText || String(r.status));
      e.type = data.type;
      e.status = r.status;
      throw e;
    }
    return data;
  }

  // The tenant shown (a provider's institution, or the viewer's own).
  const tenant = () => `?tenant_id=${encodeURIComponent(page.dataset.tenant)}`;

  function show(el, text, isError) {
    if (!el) return;
    el.textContent = text;
    el.classList.toggle("error", !!isError);
    el.hidden = false;
  }

  const actions = {
    rotate: () => call("POST", `/api/v1/keys/rotate${tenant()}`),
    "byok-register": (form) => call("PUT", `/api/v1/keys/byok${tenant()}`, {
      key_arn: form.elements.key_arn.value.trim(),
    }),
    "byok-remove": () => call("DELETE", `/api/v1/keys/byok${tenant()}`),
  };

  // Runs the action; if the API wants a fresh confirmation, confirms with the passkey and runs
  // it once more (a second refusal is shown as it is).
  async function withStepUp(form, status) {
    try {
      return await actions[form.dataset.keys](form);
    } catch (e) {
      const confirm = window.AnshinWebAuthn && window.AnshinWebAuthn.confirmPresence;
      if (e.type !== STEP_UP || !confirm) throw e;
      show(status, form.dataset.stepUp || form.dataset.working);
      await confirm();
      show(status, form.dataset.working);
      return actions[form.dataset.keys](form);
    }
  }

  document.querySelectorAll("form[data-keys]").forEach((form) => {
    const status = form.querySelector(".status");
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
      const buttons = [...form.querySelectorAll("button")];
      buttons.forEach((b) => { b.disabled = true; });
      show(status, form.dataset.working);
      try {
        await withStepUp(form, status);
        location.reload();
      } catch (e) {
        show(status, `${form.dataset.failed} ${e.message}`, true);
        buttons.forEach((b) => { b.disabled = false; });
      }
    });
  });
})();
