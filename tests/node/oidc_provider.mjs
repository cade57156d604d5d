// A hospital's OpenID Provider for the tests (node oidc-provider). The login interaction is
// completed at once for the account named by login_hint, with that account's amr/acr, so tests
// can drive the whole authorization-code flow over HTTP.
//
//   PORT=… CLIENT_ID=… CLIENT_SECRET=… REDIRECT_URI=… [ISSUER=…] [FRESH_SIGNING_KEY=1] node oidc_provider.mjs
//
// FRESH_SIGNING_KEY=1 signs with a new RSA key each start (as a provider rotating its key).
import Provider from "oidc-provider";
import { generateKeyPairSync, randomUUID } from "node:crypto";

const port = Number(process.env.PORT);
const issuer = process.env.ISSUER || `http://127.0.0.1:${port}`;

// Who can sign in, and how strongly each account authenticates.
const accounts = {
  "mfa@hikari.example.jp": { name: "多要素 花子", amr: ["pwd", "otp", "mfa"], acr: "urn:hikari:loa:2" },
  "pwd@hikari.example.jp": { name: "単要素 次郎", amr: ["pwd"], acr: "urn:hikari:loa:1" },
  "acr@hikari.example.jp": { name: "認証強度 三郎", amr: ["pwd"], acr: "urn:hikari:loa:3" },
  "mfa@other.example.com": { name: "Outside Person", amr: ["mfa"], acr: "urn:hikari:loa:2" },
};

const jwks = process.env.FRESH_SIGNING_KEY
  ? { keys: [{ ...generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ format: "jwk" }), kid: randomUUID(), use: "sig", alg: "RS256" }] }
  : undefined;

const provider = new Provider(issuer, {
  ...(jwks ? { jwks } : {}),
  clients: [{
    client_id: process.env.CLIENT_ID,
    client_secret: process.env.CLIENT_SECRET,
    redirect_uris: process.env.REDIRECT_URI.split(","),
    grant_types: ["authorization_code"],
    response_types: ["code"],
    token_endpoint_auth_method: "client_secret_basic",
  }],
  async findAccount(ctx, id) {
    const a = accounts[id];
    if (!a) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: `sub-${id}`, email: id, email_verified: true, name: a.name, amr: a.amr, acr: a.acr };
      },
    };
  },
  // Like the identity providers hospitals run (Entra ID, Okta, Keycloak): amr and acr travel in
  // the ID token itself.
  claims: { openid: ["sub", "amr", "acr"], email: ["email", "email_verified"], profile: ["name"] },
  conformIdTokenClaims: false,
  acrValues: ["urn:hikari:loa:1", "urn:hikari:loa:2", "urn:hikari:loa:3"],
  features: { devInteractions: { enabled: false } },
  pkce: { required: () => true },
  cookies: { keys: ["anshin-test-only-cookie-key"] },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: { Interaction: 600, Session: 600, Grant: 600 },
});
provider.proxy = false;

provider.use(async (ctx, next) => {
  const m = ctx.path.match(/^\/interaction\/([^/]+)$/);
  if (!m) return next();
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  let result;
  if (details.prompt.name === "login") {
    const id = details.params.login_hint;
    const a = accounts[id];
    if (!a) {
      result = { error: "access_denied", error_description: "unknown account" };
    } else {
      result = { login: { accountId: id, amr: a.amr, acr: a.acr } };
    }
  } else {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    grant.addOIDCScope("openid email profile");
    result = { consent: { grantId: await grant.save() } };
  }
  const to = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
  ctx.status = 303;
  ctx.redirect(to);
});

provider.listen(port, "127.0.0.1", () => {
  console.log(`oidc-provider listening at ${issuer}`);
});
