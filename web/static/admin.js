// The identity administration pages and the audit alert inbox: each form[data-admin] calls Anshin's JSON API through
// webauthn.js's call() (session cookie + x-csrf-token) and then reloads or shows the result.
// Needs webauthn.js loaded first (window.AnshinWebAuthn).
"use strict";
(function () {
  const api = window.AnshinWebAuthn;
  if (!api) return;
  const { call, confirmPresence } = api;

  function show(el, text, isError) {
    if (!el) return;
    el.textContent = text;
    el.classList.toggle("error", !!isError);
    el.hidden = false;
  }

  // Times are shown in Japan time, as on the server-rendered pages.
  function jst(iso) {
    const d = new Date(new Date(iso).getTime() + 9 * 3600 * 1000);
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getUTCFullYear()}-${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())} JST`;
  }

  // A datetime-local value ("YYYY-MM-DDTHH:MM"), read as Japan time whatever the browser's zone.
  function fromJst(value) {
    const v = value.length === 16 ? `${value}:00` : value;
    const d = new Date(`${v}+09:00`);
    if (Number.isNaN(d.getTime())) throw new Error(value);
    return d.toISOString();
  }

  const field = (root, name) => root.querySelector(`[data-field="${name}"]`);

  const actions = {
    async invite(form, status) {
      const res = await call("POST", "/api/v1/invitations", {
        email: form.elements.email.value,
        display_name: form.elements.display_name.value,
        role: form.elements.role.value,
      });
      const out = document.getElementById("invitation-result");
      const role = form.elements.role.selectedOptions[0].textContent;
      field(out, "who").textContent = `${res.display_name} <${res.email}> — ${role}`;
      field(out, "mailed").hidden = !res.mailed;
      field(out, "link-box").hidden = !!res.mailed;
      document.getElementById("invitation-link").value = res.enrollment_url || "";
      field(out, "expires").textContent = jst(res.expires_at);
      out.hidden = false;
      form.reset();
      show(status, form.dataset.done);
    },

    async "invitation-revoke"(form) {
      await call("DELETE", `/api/v1/invitations/${form.dataset.id}`);
      location.reload();
    },

    async "account-status"(form) {
      await call("PATCH", `/api/v1/accounts/${form.dataset.id}`, { status: form.dataset.status });
      location.reload();
    },

    async "account-end-sessions"(form) {
      await call("DELETE", `/api/v1/accounts/${form.dataset.id}/sessions`);
      location.reload();
    },

    async "password-unlock"(form) {
      await call("DELETE", `/api/v1/accounts/${form.dataset.id}/password-lock`);
      location.reload();
    },

    async "review-start"(form) {
      const body = {};
      // A due date is the end of that day in Japan.
      if (form.elements.due.value) body.due_at = new Date(`${form.elements.due.value}T23:59:59+09:00`).toISOString();
      const res = await call("POST", "/api/v1/account-reviews", body);
      location.assign(`/accounts/reviews/${res.review.id}`);
    },

    async "review-decide"(form, status, submitter) {
      const note = form.elements.note.value.trim();
      await call("POST", `/api/v1/account-reviews/${form.dataset.review}/decisions`, {
        user_id: form.dataset.user,
        decision: submitter.value,
        note: note || null,
      });
      location.reload();
    },

    async "review-close"(form) {
      const force = !!(form.elements.force && form.elements.force.checked);
      await call("POST", `/api/v1/account-reviews/${form.dataset.review}/close`, { force });
      location.reload();
    },

    async "break-glass-issue"(form, status) {
      show(status, form.dataset.working);
      await confirmPresence();
      const res = await call("POST", "/api/v1/break-glass");
      document.getElementById("bg-code").textContent = res.code;
      document.getElementById("bg-issued").hidden = false;
      const state = document.getElementById("bg-status");
      if (state) state.textContent = form.dataset.sealed;
      show(status, form.dataset.done);
      // One code per issue: the button stays off so the shown code is not replaced by accident.
      form.querySelector("button").dataset.keepDisabled = "1";
    },

    async "break-glass-use"(form, status) {
      show(status, form.dataset.working);
      await call("POST", "/api/v1/auth/break-glass", {
        org: form.elements.org.value.trim(),
        code: form.elements.code.value.trim(),
        reason: form.elements.reason.value,
      });
      location.assign("/portal");
    },

    async "grant-request"(form) {
      await call("POST", "/api/v1/maintenance-grants", {
        institution_id: form.elements.institution_id.value.trim(),
        work_plan_ref: form.elements.work_plan_ref.value,
        scope: form.elements.scope.value,
        starts_at: fromJst(form.elements.starts_at.value),
        ends_at: fromJst(form.elements.ends_at.value),
        incident: form.elements.incident.checked,
      });
      location.reload();
    },

    // Audit alerts: acknowledge (someone is on it) or resolve (final), with an optional note.
    async "alert-transition"(form, status, submitter) {
      const note = form.elements.note.value.trim();
      const to = submitter.value === "resolve" ? "resolve" : "acknowledge";
      await call("POST", `/api/v1/audit/alerts/${form.dataset.id}/${to}`, { note: note || null });
      location.reload();
    },

    async "grant-decide"(form, status, submitter) {
      const note = form.elements.note.value.trim();
      await call("POST", `/api/v1/maintenance-grants/${form.dataset.id}/decision`, {
        approve: submitter.value === "approve",
        note: note || null,
      });
      location.reload();
    },
  };

  document.querySelectorAll("form[data-admin]").forEach((form) => {
    const status = form.querySelector(".status");
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const submitter = ev.submitter || form.querySelector("button[type=submit]");
      const ask = (submitter && submitter.dataset.confirm) || form.dataset.confirm;
      if (ask && !window.confirm(ask)) return;
      const buttons = [...form.querySelectorAll("button")];
      buttons.forEach((b) => { b.disabled = true; });
      if (form.dataset.working) show(status, form.dataset.working);
      try {
        await actions[form.dataset.admin](form, status, submitter);
      } catch (e) {
        show(status, `${form.dataset.failed} ${e.message}`, true);
      } finally {
        buttons.forEach((b) => { b.disabled = !!b.dataset.keepDisabled; });
      }
    });
  });

  // "Copy" next to a link or code shown once.
  document.querySelectorAll("button[data-copy]").forEach((button) => {
    button.addEventListener("click", async () => {
      const target = document.querySelector(button.dataset.copy);
      const text = target.value !== undefined ? target.value : target.textContent;
      try {
        await navigator.clipboard.writeText(text);
      } catch (_) {
        if (target.select) target.select();
        document.execCommand("copy");
      }
      const label = button.textContent;
      button.textContent = button.dataset.copied;
      setTimeout(() => { button.textContent = label; }, 2000);
    });
  });
})();
