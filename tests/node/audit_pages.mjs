// The audit pages in Chromium (playwright-core, virtual authenticators): an institution admin
// enrolls, opens the audit trail from the menu, searches by actor and a Japan-time range, opens
// an event and sees its proof verified, downloads the export of the range, and acknowledges and
// resolves the break-glass alert in the inbox; an auditor reads the inbox without the buttons; the
// provider's admin picks the hospital among the provider's institutions.
//
//   node audit_pages.mjs BASE_URL ADMIN_ENROLL_URL AUDITOR_ENROLL_URL PROVIDER_ADMIN_ENROLL_URL ACTOR FROM_JST TO_JST INSTITUTION_ID SCREENSHOT_DIR
import { chromium } from "playwright-core";
import { readFileSync } from "node:fs";

const [base, adminLink, auditorLink, providerLink, actor, fromJst, toJst, institutionId, shots] = process.argv.slice(2);
if (!shots) {
  console.error("usage: node audit_pages.mjs BASE_URL ADMIN_ENROLL_URL AUDITOR_ENROLL_URL PROVIDER_ADMIN_ENROLL_URL ACTOR FROM_JST TO_JST INSTITUTION_ID SCREENSHOT_DIR");
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
  const context = await browser.newContext({ locale: "ja-JP", viewport: { width: 1280, height: 900 }, acceptDownloads: true });
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

try {
  // 1. The admin's menu links the audit pages.
  const admin = await person("admin");
  await enroll(admin, adminLink, "管理者PC");
  for (const href of ["/audit", "/audit/alerts"]) {
    check(await admin.locator(`nav.subnav a[href="${href}"]`).count() === 1, `the admin's menu links ${href}`);
  }
  await admin.click('nav.subnav a[href="/audit"]');
  await admin.waitForURL("**/audit");
  check(await text(admin, "h1") === "監査証跡の検索", "Japanese heading on /audit");
  check(await admin.locator("#audit-events tbody tr").count() >= 4, "the trail lists events");
  await shot(admin, "audit");

  // 2. Search by actor and a range typed in Japan time.
  await admin.fill("#a_actor", actor);
  await admin.fill("#a_from", fromJst);
  await admin.fill("#a_to", toJst);
  await admin.click("#audit-search button[type=submit]");
  await admin.waitForURL(/\/audit\?.*actor=/);
  const rows = admin.locator("#audit-events tbody tr");
  const n = await rows.count();
  check(n === 3, `the search finds the actor's 3 events, got ${n}`);
  for (let i = 0; i < n; i++) {
    check((await rows.nth(i).textContent()).includes(actor), `row ${i} is the actor's`);
    check(await rows.nth(i).locator(".seq").count() === 1, `row ${i} is sealed`);
  }
  check((await admin.inputValue("#a_from")) === fromJst, "the range is kept");
  check((await admin.inputValue("#x_from")) === fromJst, "the export form has the same range");
  await shot(admin, "audit-search");

  // 3. One event: its fields and its proof, verified by the server.
  await rows.first().locator("a").first().click();
  await admin.waitForURL(/\/audit\/events\/[0-9a-f-]{36}$/, { timeout: 15000 });
  check((await text(admin, "#proof-verdict")).startsWith("✓"), "the proof is verified");
  check((await text(admin, "#entry-bytes")).startsWith('{"event":{'), "the entry bytes are shown");
  check((await text(admin, "#sealed-by")).includes("封印されました"), "the sealing checkpoint is named");
  check((await admin.locator("#event-fields").textContent()).includes(actor), "the actor is shown");
  await shot(admin, "audit-event");
  await admin.goBack();

  // 4. Download the export of the range.
  const [download] = await Promise.all([
    admin.waitForEvent("download", { timeout: 15000 }),
    admin.click("#audit-export button[type=submit]"),
  ]);
  const file = `${shots}/export.jsonl`;
  await download.saveAs(file);
  check(/^anshin-audit-.*\.jsonl$/.test(download.suggestedFilename()), `export file name ${download.suggestedFilename()}`);
  const lines = readFileSync(file, "utf8").trimEnd().split("\n");
  const header = JSON.parse(lines[0]);
  check(header.format === "anshin-audit-export/1", "an anshin export");
  check(lines.filter((l) => l.includes('"type":"entry"')).length >= 3, "with the range's entries");

  // 5. The alert inbox: acknowledge, then resolve the break-glass alert.
  await admin.click('nav.subnav a[href="/audit/alerts"]');
  await admin.waitForURL("**/audit/alerts");
  const alert = admin.locator('#alerts tr[data-severity="critical"]').first();
  check((await alert.textContent()).includes("非常時用アカウント"), "the break-glass alert is open");
  await shot(admin, "alerts-open");
  await alert.locator("input[name=note]").fill("本人に確認中");
  // admin.js calls the API with the CSRF token, then reloads the page.
  await Promise.all([admin.waitForNavigation({ timeout: 15000 }), alert.locator("button[value=acknowledge]").click()]);
  check(await admin.locator('#alerts tr[data-severity="critical"]').count() === 0, "no longer open");
  await admin.goto(`${base}/audit/alerts?status=acknowledged`);
  const acked = admin.locator('#alerts tr[data-severity="critical"]').first();
  check((await acked.textContent()).includes("本人に確認中"), "the note is kept");
  await shot(admin, "alerts-acknowledged");
  await Promise.all([admin.waitForNavigation({ timeout: 15000 }), acked.locator("button[value=resolve]").click()]);
  await admin.goto(`${base}/audit/alerts?status=resolved`);
  await admin.locator('#alerts tr[data-severity="critical"] .badge.alert-resolved').waitFor({ timeout: 15000 });
  await shot(admin, "alerts-resolved");

  // 6. The auditor reads the inbox, with no buttons; English on request.
  const auditor = await person("auditor");
  await enroll(auditor, auditorLink, "監査用PC");
  await auditor.goto(`${base}/audit/alerts?status=resolved`);
  check(await auditor.locator("#alerts tbody tr").count() >= 1, "the auditor sees the alert");
  check(await auditor.locator("form[data-admin=alert-transition]").count() === 0, "auditors read only");
  await auditor.goto(`${base}/audit?lang=en`);
  check(await text(auditor, "h1") === "Search the audit trail", "English heading");
  await shot(auditor, "audit-en");

  // 7. The provider's admin reads the hospital's trail and alerts.
  const provider = await person("provider");
  await enroll(provider, providerLink, "事業者PC");
  await provider.goto(`${base}/audit`);
  await provider.selectOption("#a_tenant", institutionId);
  await provider.fill("#a_actor", actor);
  await provider.click("#audit-search button[type=submit]");
  await provider.waitForURL(/\/audit\?.*tenant=/);
  check(await text(provider, "#audit-tenant") === "ひかり病院", "the hospital's trail");
  check(await provider.locator("#audit-events tbody tr").count() === 3, "the provider finds the nurse's events");
  await shot(provider, "audit-provider");
  await provider.goto(`${base}/audit/alerts?status=resolved`);
  check((await provider.locator("#alerts tbody tr").first().textContent()).includes("ひかり病院"), "alerts name the institution");
  await shot(provider, "alerts-provider");
  console.log("ok: audit search, event proof, export download and alert inbox");
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
