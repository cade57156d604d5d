// The identity administration pages in Chromium (playwright-core, virtual authenticators):
// an institution admin enrolls, reads the account inventory, invites a person and gets the
// link, runs a review campaign (confirm self, disable the new person, close), issues a
// break-glass code; a maintainer requests a maintenance grant that the admin approves; someone
// uses the break-glass code with a reason and the portal shows the emergency banner.
//
//   node identity_pages.mjs BASE_URL ADMIN_ENROLL_URL MAINTAINER_ENROLL_URL ORG INSTITUTION_ID SCREENSHOT_DIR
import { chromium } from "playwright-core";

const [base, adminLink, maintLink, org, institutionId, shots] = process.argv.slice(2);
if (!shots) {
  console.error("usage: node identity_pages.mjs BASE_URL ADMIN_ENROLL_URL MAINTAINER_ENROLL_URL ORG INSTITUTION_ID SCREENSHOT_DIR");
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

// A person's browser: its own context, and a virtual platform authenticator unless `bare`.
async function person(name, { bare = false } = {}) {
  const context = await browser.newContext({ locale: "ja-JP", viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on("dialog", (d) => d.accept());
  pages.push([name, page]);
  if (!bare) {
    const cdp = await context.newCDPSession(page);
    await cdp.send("WebAuthn.enable");
    await cdp.send("WebAuthn.addVirtualAuthenticator", {
      options: {
        protocol: "ctap2", transport: "internal", hasResidentKey: true,
        hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true,
      },
    });
  }
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

// Japan time as a datetime-local value, `minutes` from now.
function jstInput(minutes) {
  return new Date(Date.now() + 9 * 3600 * 1000 + minutes * 60 * 1000).toISOString().slice(0, 16);
}

try {
  // 1. The institution admin enrolls; the portal links the administration pages.
  const admin = await person("admin");
  await enroll(admin, adminLink, "管理者PC");
  for (const href of ["/accounts", "/invitations", "/break-glass", "/maintenance-grants"]) {
    check(await admin.locator(`nav.subnav a[href="${href}"]`).count() === 1, `the admin's portal links ${href}`);
  }
  await shot(admin, "portal-admin");

  // 2. The account inventory.
  await admin.click('nav.subnav a[href="/accounts"]');
  await admin.waitForURL("**/accounts");
  const rows = await admin.locator("#accounts tbody tr").count();
  check(rows >= 1, "the inventory lists accounts");
  const adminEmail = await admin.locator("#accounts tbody tr").first().getAttribute("data-email");
  check(await text(admin, "h1") === "アカウント一覧（ID の棚卸）", "Japanese heading on /accounts");
  await shot(admin, "accounts");

  // 3. Invite a person: no mail server, so the enrollment link is shown once.
  await admin.goto(`${base}/invitations`);
  await admin.fill("#invite_email", "shinjin@hikari.example.jp");
  await admin.fill("#invite_name", "新人 職員");
  await admin.selectOption("#invite_role", "institution_staff");
  await admin.click("form[data-admin=invite] button[type=submit]");
  await admin.locator("#invitation-result:not([hidden])").waitFor({ timeout: 15000 });
  const link = await admin.inputValue("#invitation-link");
  check(link.startsWith(`${base}/enroll#token=`), `the invitation shows the enrollment link, got "${link}"`);
  await shot(admin, "invitations");

  // The invited person enrolls; staff see no administration links and get a friendly 403.
  const staff = await person("staff");
  await enroll(staff, link, "受付PC");
  check(await staff.locator("nav.subnav").count() === 0, "staff get no administration menu");
  const refused = await staff.goto(`${base}/accounts`);
  check(refused.status() === 403, `staff opening /accounts got ${refused.status()}`);
  await shot(staff, "forbidden");

  // 4. A review campaign: start, confirm the admin, disable the new person, close.
  await admin.goto(`${base}/accounts/reviews`);
  await admin.click("form[data-admin=review-start] button");
  await admin.waitForURL(/\/accounts\/reviews\/[0-9a-f-]{36}$/, { timeout: 15000 });
  check(await admin.locator("#review-items tbody tr").count() === 2, "the review snapshots both accounts");
  await shot(admin, "review-open");
  await admin.fill(`tr[data-email="${adminEmail}"] input[name=note]`, "管理者として継続");
  await admin.click(`tr[data-email="${adminEmail}"] button[value=confirmed]`);
  await admin.locator(`tr[data-email="${adminEmail}"] .badge.decision-confirmed`).waitFor({ timeout: 15000 });
  await admin.fill('tr[data-email="shinjin@hikari.example.jp"] input[name=note]', "試用期間終了");
  await admin.click('tr[data-email="shinjin@hikari.example.jp"] button[value=disabled]');
  await admin.locator('tr[data-email="shinjin@hikari.example.jp"] .badge.decision-disabled').waitFor({ timeout: 15000 });
  await admin.click("form[data-admin=review-close] button");
  await admin.locator("#review-status.review-closed").waitFor({ timeout: 15000 });
  check(await text(admin, "#review-status") === "完了", "the review is closed");
  await shot(admin, "review-closed");
  // Disabled in the review: the person's session ended.
  await staff.goto(`${base}/portal`);
  check(staff.url().endsWith("/signin"), `the disabled person's portal went to ${staff.url()}`);
  await admin.goto(`${base}/accounts`);
  check(await text(admin, 'tr[data-email="shinjin@hikari.example.jp"] .badge') === "無効", "the inventory shows the person disabled");
  await admin.click('tr[data-email="shinjin@hikari.example.jp"] a');
  await admin.waitForURL(/\/accounts\/[0-9a-f-]{36}$/, { timeout: 15000 });
  check(await text(admin, "h1") === "新人 職員", "the account page names the person");
  check(await admin.locator('form[data-admin=account-status][data-status=active] button').count() === 1, "a disabled account can be re-enabled");
  await shot(admin, "account");

  // 5. Issue the break-glass code (after a passkey confirmation); shown once.
  await admin.goto(`${base}/break-glass`);
  await admin.click("form[data-admin=break-glass-issue] button");
  await admin.locator("#bg-issued:not([hidden])").waitFor({ timeout: 15000 });
  const code = await text(admin, "#bg-code");
  check(code.startsWith("bg_"), `the page shows the emergency code, got "${code}"`);
  await shot(admin, "break-glass-issued");

  // 6. A maintainer requests a grant for the hospital; the admin approves it.
  const maint = await person("maintainer");
  await enroll(maint, maintLink, "保守用PC");
  check(await maint.locator('nav.subnav a[href="/maintenance-grants"]').count() === 1, "the maintainer's portal links grants");
  check(await maint.locator('nav.subnav a[href="/accounts"]').count() === 0, "the maintainer gets no inventory link");
  await maint.goto(`${base}/maintenance-grants`);
  await maint.fill("#grant_institution", institutionId);
  await maint.fill("#grant_plan", "WP-2026-0415-01 レセコン連携の障害調査");
  await maint.selectOption("#grant_scope", "read");
  await maint.fill("#grant_starts", jstInput(-1));
  await maint.fill("#grant_ends", jstInput(120));
  await maint.click("form[data-admin=grant-request] button[type=submit]");
  await maint.locator("#grants .badge.grant-requested").waitFor({ timeout: 15000 });
  await shot(maint, "grant-requested");

  await admin.goto(`${base}/maintenance-grants`);
  check((await text(admin, "#own-institution-id")) === institutionId, "the admin sees the institution's id");
  await admin.fill("#grants input[name=note]", "作業計画を確認しました");
  await admin.click("#grants button[value=approve]");
  await admin.locator("#grants .badge.grant-approved").waitFor({ timeout: 15000 });
  check(await admin.locator("#grants .badge.active").count() === 1, "the approved grant is in use now");
  await shot(admin, "grant-approved");
  await maint.reload();
  await maint.locator("#grants .badge.grant-approved").waitFor({ timeout: 15000 });

  // 7. Someone uses the sealed code with a reason: an emergency session with a banner.
  const emergency = await person("emergency", { bare: true });
  await emergency.goto(`${base}/break-glass/use?org=${org}`);
  check((await emergency.inputValue("#bg_org")) === org, "the organisation is pre-filled");
  await emergency.fill("#bg_code", code);
  await emergency.fill("#bg_reason", "電子カルテ障害のため、病棟で緊急に患者情報を参照する");
  await shot(emergency, "break-glass-use");
  await emergency.click("form[data-admin=break-glass-use] button");
  await emergency.waitForURL("**/portal", { timeout: 15000 });
  const banner = emergency.locator(".emergency[role=alert]");
  check(await banner.isVisible(), "the portal shows the emergency banner");
  check((await banner.textContent()).includes("非常時アクセス中"), "the banner says emergency access");
  await shot(emergency, "break-glass-portal");
  await emergency.goto(`${base}/accounts`);
  check(await emergency.locator(".emergency[role=alert]").isVisible(), "the banner shows on every page");

  // The admin sees the code used, with the reason.
  await admin.goto(`${base}/break-glass`);
  check((await text(admin, "#bg-status")).startsWith("使用済み"), "the admin sees the code used");
  await shot(admin, "break-glass-used");

  // English is available.
  await admin.goto(`${base}/accounts?lang=en`);
  check(await text(admin, "h1") === "Accounts (ID inventory)", "English heading");
  await shot(admin, "accounts-en");
  console.log("ok: inventory, invitation, review, break-glass and maintenance grant pages");
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
}
