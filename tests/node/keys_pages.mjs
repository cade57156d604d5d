// The key page in Chromium (playwright-core, virtual authenticators): an institution admin
// enrolls, opens 鍵の管理 from the menu and sees the KEK that GET /api/v1/keys/status reports,
// rotates it (after the reload the active key changed and the old one is listed as retired),
// tries BYOK with the local provider and sees the refusal; the English page renders; an auditor
// reads without the actions; the provider's admin picks the hospital and sees its key;
// institution staff get the forbidden page.
//
// Rotation is a sensitive key operation: before it, the script prints "pause: stale-step-up"
// and waits for a line on stdin, while the Rust test makes the admin's passkey confirmation old
// (as if the enrollment was long ago). The rotation is then refused with step-up-required, the
// page confirms with the virtual authenticator and retries, and the rotation goes through.
//
//   node keys_pages.mjs BASE_URL ADMIN_ENROLL_URL AUDITOR_ENROLL_URL STAFF_ENROLL_URL PROVIDER_ADMIN_ENROLL_URL INSTITUTION_ID SCREENSHOT_DIR
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

// One line from stdin (the Rust test's go-ahead after a pause).
const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function pause(what) {
  console.log(`pause: ${what}`);
  const next = await stdinLines.next();
  if (next.done) throw new Error(`no go-ahead after pause ${what}`);
}

const [base, adminLink, auditorLink, staffLink, providerLink, institutionId, shots] = process.argv.slice(2);
if (!shots) {
  console.error("usage: node keys_pages.mjs BASE_URL ADMIN_ENROLL_URL AUDITOR_ENROLL_URL STAFF_ENROLL_URL PROVIDER_ADMIN_ENROLL_URL INSTITUTION_ID SCREENSHOT_DIR");
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP localhost 127.0.0.1",
  ],
});

const pages = [];
function check(cond, what) {
  if (!cond) throw new Error(what);
}

async function person(name) {
  const context = await browser.newContext({ locale: "ja-JP", viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on("dialog", (d) => d.accept());
  pages.push([name, page]);
  const cdp = await context.newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2", transport: "internal", hasResidentKey: true,
      hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true,
    },
  });
  return page;
}

async function enroll(page, link, deviceName) {
  await page.goto(link);
  await page.fill("#credential_name", deviceName);
  await page.click("form[data-webauthn=enroll] button");
  await page.waitForURL("**/portal", { timeout: 15000 });
}

// Screenshots are for people to look at, not assertions: Chromium under load sometimes answers
// "Unable to capture screenshot" while it is still compositing, so try again briefly.
async function shot(page, name) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
    } catch (e) {
      if (attempt >= 3) throw e;
      await page.waitForTimeout(500 * attempt);
    }
  }
}
const text = async (page, sel) => (await page.locator(sel).first().textContent()).trim();
// The key status as the JSON API reports it, with the page's session cookie.
const apiStatus = (page, tenant) => page.evaluate(async (t) => {
  const r = await fetch(`/api/v1/keys/status${t ? `?tenant_id=${t}` : ""}`, { credentials: "same-origin" });
  return r.json();
}, tenant || null);

try {
  // 1. The admin opens the key page from the menu: the KEK the API reports.
  const admin = await person("admin");
  await enroll(admin, adminLink, "管理者PC");
  check(await admin.locator('nav.subnav a[href="/keys"]').count() === 1, "the admin's menu links /keys");
  await admin.click('nav.subnav a[href="/keys"]');
  await admin.waitForURL("**/keys");
  check(await text(admin, "h1") === "鍵の管理", "Japanese heading on /keys");
  check(await text(admin, "#keys-tenant") === "ひかり病院", "the hospital's keys");
  const firstKey = await text(admin, "#active-key-id");
  const api = await apiStatus(admin);
  check(api.active && api.active.key_id === firstKey, `the page shows the API's key: ${firstKey} vs ${JSON.stringify(api.active)}`);
  check((await text(admin, "#kek-provider")).startsWith("ローカル"), "the local provider");
  check(await text(admin, "#kek-origin") === "Anshin 管理", "managed by Anshin");
  check((await text(admin, "#kek-health")).startsWith("正常"), "healthy");
  check(await admin.locator("#keys-previous-none").count() === 1, "no previous keys yet");
  await shot(admin, "keys-ja");

  // 2. Rotate now: keys.js calls the API with the CSRF token. The admin's confirmation is old
  // by now, so the API asks for a step-up: the page confirms with the passkey (the virtual
  // authenticator answers), retries, then reloads.
  check(await admin.locator("#keys-step-up-note").count() === 1, "the page says a passkey confirmation comes first");
  await pause("stale-step-up");
  const apiCalls = [];
  admin.on("response", (r) => {
    const u = new URL(r.url());
    if (u.pathname.startsWith("/api/v1/")) apiCalls.push(`${r.request().method()} ${u.pathname} ${r.status()}`);
  });
  await Promise.all([
    admin.waitForNavigation({ timeout: 15000 }),
    admin.click('form[data-keys="rotate"] button[type=submit]'),
  ]);
  const expected = [
    "POST /api/v1/keys/rotate 403",
    "POST /api/v1/me/step-up/begin 200",
    "POST /api/v1/me/step-up/finish 204",
    "POST /api/v1/keys/rotate 202",
  ];
  check(JSON.stringify(apiCalls.slice(0, 4)) === JSON.stringify(expected), `refused, step-up, retried: ${apiCalls.join(", ")}`);
  const newKey = await text(admin, "#active-key-id");
  check(newKey !== firstKey, "a new active key after the rotation");
  check((await apiStatus(admin)).active.key_id === newKey, "the API agrees");
  const retired = admin.locator('#keys-previous tr[data-status="retired"]');
  check(await retired.count() === 1, "one retired key");
  check((await retired.first().textContent()).includes(firstKey), "the old key is listed as retired");
  check((await retired.first().textContent()).includes("退役"), "marked retired");
  await shot(admin, "keys-rotated");

  // 3. BYOK with the local provider: the problem's detail is shown, nothing changes.
  await admin.fill("#byok_arn", "arn:aws:kms:ap-northeast-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab");
  await admin.click('form[data-keys="byok-register"] button[type=submit]');
  const refusal = admin.locator('form[data-keys="byok-register"] .status.error');
  await refusal.waitFor({ timeout: 15000 });
  const refused = await refusal.textContent();
  check(refused.startsWith("うまくいきませんでした") && refused.includes("local provider"), `the refusal is shown: ${refused}`);
  check(await text(admin, "#active-key-id") === newKey, "the key did not change");
  await shot(admin, "keys-byok-refused");

  // 4. English, with the same language switch as the other pages.
  await admin.click("a.lang");
  await admin.waitForURL(/\/keys\?.*lang=en/);
  check(await text(admin, "h1") === "Key management", "English heading");
  check(await text(admin, "#kek-origin") === "Managed by Anshin", "English origin");
  check(await text(admin, "#active-key-id") === newKey, "the same key in English");
  await shot(admin, "keys-en");
  await admin.goto(`${base}/keys?lang=ja`);

  // 5. The auditor reads, without the actions.
  const auditor = await person("auditor");
  await enroll(auditor, auditorLink, "監査用PC");
  await auditor.goto(`${base}/keys`);
  check(await text(auditor, "#active-key-id") === newKey, "the auditor sees the key");
  check(await auditor.locator("form[data-keys]").count() === 0, "auditors read only");
  await shot(auditor, "keys-auditor");

  // 6. The provider's admin picks the hospital.
  const provider = await person("provider");
  await enroll(provider, providerLink, "事業者PC");
  await provider.goto(`${base}/keys`);
  check(await text(provider, "#keys-tenant") === "アルファクラウド", "the provider's own keys first");
  await provider.selectOption("#k_tenant", institutionId);
  await Promise.all([
    provider.waitForURL(/\/keys\?tenant=/),
    provider.click("#keys-tenant-picker button[type=submit]"),
  ]);
  check(await text(provider, "#keys-tenant") === "ひかり病院", "the hospital's keys");
  check(await text(provider, "#active-key-id") === newKey, "the provider sees the hospital's key");
  check((await apiStatus(provider, institutionId)).active.key_id === newKey, "as the API does");
  check(await provider.locator('#keys-previous tr[data-status="retired"]').count() === 1, "with its history");
  await shot(provider, "keys-provider");

  // 7. Institution staff: the forbidden page, and no menu.
  const staff = await person("staff");
  await enroll(staff, staffLink, "病棟PC");
  const res = await staff.goto(`${base}/keys`);
  check(res.status() === 403, `staff get 403, got ${res.status()}`);
  check(await text(staff, "h1") === "この画面を使う権限がありません", "the forbidden page");
  check(await staff.locator("#active-key-id").count() === 0, "no key shown to staff");
  await shot(staff, "keys-staff-forbidden");
  console.log("ok: key page status, rotation after step-up, BYOK refusal, provider view and roles");
} catch (e) {
  for (const [name, page] of pages) {
    await page.screenshot({ path: `${shots}/failure-${name}.png`, fullPage: true }).catch(() => {});
    const status = await page.locator(".status").allTextContents().catch(() => []);
    console.error(`${name}: page ${page.url()} status: ${status.join(" | ")}`);
  }
  console.error(e.stack || String(e));
  process.exitCode = 1;
} finally {
  await browser.close();
  process.stdin.destroy();
}
