// A person's browser: open an invitation link, register a passkey, land on the portal, sign
// out, sign in again with the passkey. Debian Chromium, driven by playwright-core, with a
// virtual platform authenticator (user verification on) through the DevTools WebAuthn domain.
//
//   node enroll_and_sign_in.mjs BASE_URL ENROLLMENT_URL EMAIL DISPLAY_NAME SCREENSHOT_DIR [ORG]
//
// With ORG (a tenant whose OpenID Provider answers for EMAIL with one factor only), the person
// finally signs in through the organisation and completes the passkey step-up.
import { chromium } from "playwright-core";

const [base, enrollUrl, email, displayName, shots, org] = process.argv.slice(2);
if (!shots) {
  console.error("usage: node enroll_and_sign_in.mjs BASE_URL ENROLLMENT_URL EMAIL DISPLAY_NAME SCREENSHOT_DIR");
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
let page;
try {
  const context = await browser.newContext({ locale: "ja-JP", viewport: { width: 1100, height: 900 } });
  page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send("WebAuthn.enable");
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2", transport: "internal", hasResidentKey: true,
      hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true,
    },
  });

  // 1. Enroll from the invitation link.
  await page.goto(enrollUrl);
  await page.fill("#credential_name", "テスト端末");
  await page.screenshot({ path: `${shots}/enroll.png`, fullPage: true });
  await page.click("form[data-webauthn=enroll] button");
  await page.waitForURL("**/portal", { timeout: 15000 });
  const heading = await page.textContent("h1");
  if (!heading.includes(displayName)) throw new Error(`portal greets "${heading}", expected ${displayName}`);
  await page.screenshot({ path: `${shots}/portal.png`, fullPage: true });
  const { credentials } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
  if (credentials.length !== 1) throw new Error(`the authenticator holds ${credentials.length} credentials`);

  // 2. Sign out: the portal is closed again.
  await page.click("form[data-webauthn=sign-out] button");
  await page.waitForURL("**/signin", { timeout: 15000 });
  await page.goto(`${base}/portal`);
  if (!page.url().endsWith("/signin")) throw new Error(`portal without a session went to ${page.url()}`);

  // 3. Sign in with the passkey.
  if ((await page.locator("form[data-webauthn=password-sign-in] #key_password").count()) !== 1) {
    throw new Error("the sign-in page offers no security key + password form");
  }
  await page.fill("#email", email);
  await page.screenshot({ path: `${shots}/signin.png`, fullPage: true });
  await page.click("form[data-webauthn=sign-in] button");
  await page.waitForURL("**/portal", { timeout: 15000 });
  const again = await page.textContent("h1");
  if (!again.includes(displayName)) throw new Error(`after sign-in the portal greets "${again}"`);
  const rows = await page.locator("tbody tr").count();
  if (rows < 1) throw new Error("the portal lists no sessions");
  // 3b. The portal lists the passkey by its name; removing the only one is refused after a
  // fresh confirmation with it (step-up through the page's script).
  const named = await page.locator("td", { hasText: "テスト端末" }).count();
  if (named !== 1) throw new Error("the portal does not list the passkey by its name");
  await page.click("form[data-webauthn=remove-credential] button");
  const refusal = page.locator("form[data-webauthn=remove-credential] .status.error");
  await refusal.waitFor({ timeout: 15000 });
  const why = await refusal.textContent();
  if (!why.includes("last way to sign in")) throw new Error(`removing the last passkey said "${why}"`);
  await page.screenshot({ path: `${shots}/credentials.png`, fullPage: true });
  if ((await page.locator("form[data-webauthn=password-sign-in]").count()) !== 0) throw new Error("portal shows a sign-in form");
  console.log(`ok: enrolled, signed out and signed in as ${email}`);

  if (org) {
    // 4. Sign out, then sign in with the organisation's account: one factor there, so the
    // passkey step-up completes two-factor sign-in.
    await page.click("form[data-webauthn=sign-out] button");
    await page.waitForURL("**/signin", { timeout: 15000 });
    await page.fill("#org", org);
    await page.fill("#login_hint", email);
    await page.click("form[action='/auth/oidc/start'] button");
    await page.waitForURL("**/signin/step-up**", { timeout: 15000 });
    await page.screenshot({ path: `${shots}/step-up.png`, fullPage: true });
    await page.click("form[data-webauthn=step-up] button");
    await page.waitForURL("**/portal", { timeout: 15000 });
    const via = await page.textContent("h1");
    if (!via.includes(displayName)) throw new Error(`after the step-up the portal greets "${via}"`);
    console.log(`ok: organisation sign-in with passkey step-up as ${email}`);
  }
} catch (e) {
  if (page) {
    await page.screenshot({ path: `${shots}/failure.png`, fullPage: true }).catch(() => {});
    const status = await page.locator(".status").allTextContents().catch(() => []);
    console.error(`page ${page.url()} status: ${status.join(" | ")}`);
  }
  console.error(e.stack || String(e));
  process.exitCode = 1;
} finally {
  await browser.close();
}
