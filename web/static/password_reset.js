// The password-reset page: the token of the administrator's reset link is in the URL fragment
// (never sent to the server); the new password is typed twice and sent with it.
"use strict";
(function () {
  const form = document.querySelector("form[data-password-reset]");
  if (!form) return;
  const status = form.querySelector(".status");
  const done = document.querySelector("[data-password-reset-done]");
  const token = new URLSearchParams(location.hash.slice(1)).get("token");

  function show(text, isError) {
    status.textContent = text;
    status.classList.toggle("error", !!isError);
    status.hidden = false;
  }

  // The language switch keeps the link's token.
  const lang = document.querySelector("a.lang");
  if (lang && token) lang.href = lang.getAttribute("href") + location.hash;

  if (!token) {
    show(form.dataset.noToken, true);
    form.querySelector("button[type=submit]").disabled = true;
    return;
  }

  const again = form.elements.new_password_again;
  const check = () => {
    again.setCustomValidity(again.value && again.value !== form.elements.new_password.value
      ? form.dataset.mismatch : "");
  };
  form.elements.new_password.addEventListener("input", check);
  again.addEventListener("input", check);

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    check();
    if (!form.reportValidity()) return;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    show(form.dataset.working);
    try {
      const r = await fetch("/api/v1/auth/password-reset", {
        method: "POST",
        credentials: "same-origin",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ token, new_password: form.elements.new_password.value }),
      });
      if (!r.ok) {
        const data = await r.json().catch(() => ({}));
        throw new Error(data.detail || r.statusText || String(r.status));
      }
      // The link has done its job; keep the token out of history.
      history.replaceState(null, "", location.pathname + location.search);
      form.reset();
      form.hidden = true;
      done.hidden = false;
      const link = done.querySelector("a");
      if (link) link.focus();
    } catch (e) {
      show(form.dataset.failed + " " + e.message, true);
      button.disabled = false;
    }
  });
})();
