// A real OpenID Provider for pacer's black-box tests: npm `oidc-provider` on 127.0.0.1.
//
//   node tests/oidc/provider.mjs CONFIG.json [--port N]
//
// CONFIG.json (written by tests/blackbox/oidc_provider.rs):
//   {
//     "port": 0,                                  // optional; 0 (default) = any free port
//     "client": {"client_id": "...", "client_secret": "...", "redirect_uris": ["http://..."],
//                "extra": {...}},                  // optional: more client metadata, merged in
//     "accounts": [{"sub": "alice", "email": "...", "email_verified": true,
//                   "claims": {"groups": [...], "cognito:groups": [...], "roles": [...], ...}}],
//     "machine": {"client_id": "...", "client_secret": "...", "resource": "urn:...",
//                 "audience": "..."},           // optional: a machine client, see below
//     "signing_key": {"kty": "RSA", "kid": "...", ...}   // optional: the private JWK to sign
//   }                                                    // with (tests/oidc/signing-key.mjs)
// The port may also come from `--port N` or OIDC_PROVIDER_PORT (those win over the file).
//
// When it listens it prints one JSON line on stdout: {"issuer": "http://127.0.0.1:PORT",
// "port": PORT, "ready": true}. Other stdout lines (oidc-provider notices) may come before it.
// It exits when its stdin closes (so a killed test never leaves it behind) and on SIGTERM/SIGINT.
//
// The provider: one static confidential client (authorization_code + code only, PKCE S256
// required, client_secret_basic; oidc-provider also accepts client_secret_post from a client
// registered for _basic), the accounts above (login = the account's `sub`, any password, through
// the built-in devInteractions login and consent pages), every scope's claims in the ID token
// (conformIdTokenClaims: false): `openid email profile groups` gives sub, email, email_verified,
// the standard profile claims the account has, and every other extra claim (groups,
// cognito:groups, roles, …) under the `groups` scope. The signing key is `signing_key` when given,
// else a fresh RSA key; fresh cookie keys per start. Errors, and the steps of its start, are logged to stderr.
//
// With `machine`, a second client that gets tokens for itself (client_credentials,
// client_secret_basic) for the one `resource`: JWT access tokens (RFC 9068: iss, sub = the
// client, aud = `audience`, exp, iat, jti, client_id, scope), as a workload identity provider
// issues them to machines.

import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import process from 'node:process';

import Provider from 'oidc-provider';

import { rsaSigningKey } from './signing-key.mjs';

function fail(message) {
  process.stderr.write(`provider.mjs: ${message}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const out = { configPath: process.env.OIDC_PROVIDER_CONFIG, port: process.env.OIDC_PROVIDER_PORT };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg === '--port') {
      out.port = argv[i += 1];
    } else if (arg === '--config') {
      out.configPath = argv[i += 1];
    } else if (!arg.startsWith('--')) {
      out.configPath = arg;
    } else {
      fail(`unknown argument ${arg}`);
    }
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
if (!args.configPath) fail('usage: node provider.mjs CONFIG.json [--port N]');

let config;
try {
  config = JSON.parse(readFileSync(args.configPath, 'utf8'));
} catch (err) {
  fail(`cannot read config ${args.configPath}: ${err.message}`);
}

const port = Number(args.port ?? config.port ?? 0);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`bad port ${args.port ?? config.port}`);

const { client } = config;
if (!client?.client_id || !client?.client_secret || !Array.isArray(client?.redirect_uris)) {
  fail('config.client needs client_id, client_secret and redirect_uris');
}

const accounts = new Map();
for (const account of config.accounts ?? []) {
  if (!account.sub) fail('every account needs a sub');
  accounts.set(account.sub, account);
}

// Standard claims of the `profile` scope (OpenID Connect Core 5.4).
const PROFILE = ['name', 'family_name', 'given_name', 'middle_name', 'nickname',
  'preferred_username', 'profile', 'picture', 'website', 'gender', 'birthdate', 'zoneinfo',
  'locale', 'updated_at'];
// Every other extra claim an account carries is released under the `groups` scope.
const groupClaims = new Set(['groups', 'cognito:groups', 'roles']);
for (const account of accounts.values()) {
  for (const name of Object.keys(account.claims ?? {})) {
    if (!PROFILE.includes(name) && !['sub', 'email', 'email_verified'].includes(name)) {
      groupClaims.add(name);
    }
  }
}

function accountClaims(account) {
  const claims = { ...(account.claims ?? {}), sub: account.sub };
  if (account.email !== undefined && account.email !== null) claims.email = account.email;
  if (account.email_verified !== undefined && account.email_verified !== null) {
    claims.email_verified = account.email_verified;
  }
  return claims;
}

// Progress goes to stderr, which the harnesses show only when a start fails.
const step = (what) => process.stderr.write(`provider.mjs: ${what} (${Math.round(process.uptime() * 1000)} ms)\n`);
if (!config.signing_key) step('config read; generating the RSA signing key');
const signingKey = config.signing_key ?? rsaSigningKey();

const server = createServer();

function shutdown(code = 0) {
  server.close();
  process.exit(code);
}
process.on('SIGTERM', () => shutdown(0));
process.on('SIGINT', () => shutdown(0));
process.stdin.on('end', () => shutdown(0));
process.stdin.on('close', () => shutdown(0));
process.stdin.on('error', () => shutdown(0));
process.stdin.resume();

server.on('error', (err) => fail(`cannot listen on 127.0.0.1:${port}: ${err.message}`));

step(`signing key ready; listening on 127.0.0.1:${port}`);
server.listen(port, '127.0.0.1', () => {
  const actualPort = server.address().port;
  step(`listening on 127.0.0.1:${actualPort}; starting oidc-provider`);
  const issuer = `http://127.0.0.1:${actualPort}`;

  const { machine } = config;
  const machineClients = machine ? [{
    client_id: machine.client_id,
    client_secret: machine.client_secret,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
  }] : [];
  const provider = new Provider(issuer, {
    clients: [{
      client_id: client.client_id,
      client_secret: client.client_secret,
      redirect_uris: client.redirect_uris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      ...(client.extra ?? {}),
    }, ...machineClients],
    responseTypes: ['code'],
    pkce: { required: () => true },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: PROFILE,
      groups: [...groupClaims],
    },
    conformIdTokenClaims: false,
    // oidc-provider's defaults, set explicitly so it does not print a notice for each.
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 60,
      IdToken: 3600,
      Interaction: 3600,
      Session: 14 * 24 * 3600,
      Grant: 14 * 24 * 3600,
    },
    features: {
      devInteractions: { enabled: true },
      ...(machine ? {
        clientCredentials: { enabled: true },
        resourceIndicators: {
          enabled: true,
          defaultResource: () => machine.resource,
          useGrantedResource: () => true,
          getResourceServerInfo: (_ctx, resource) => {
            if (resource !== machine.resource) throw new Error(`unknown resource ${resource}`);
            return {
              scope: 'runners',
              audience: machine.audience,
              accessTokenFormat: 'jwt',
              accessTokenTTL: 600,
              jwt: { sign: { alg: 'RS256' } },
            };
          },
        },
      } : {}),
    },
    async findAccount(_ctx, sub) {
      const account = accounts.get(sub);
      if (!account) return undefined;
      return {
        accountId: sub,
        async claims() {
          return accountClaims(account);
        },
      };
    },
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    async renderError(ctx, out, error) {
      ctx.type = 'html';
      ctx.body = `<!DOCTYPE html><title>oidc error</title><pre id="error">${
        JSON.stringify(out).replace(/</g, '\\u003c')}</pre>`;
      if (error) process.stderr.write(`provider.mjs: renderError ${error.stack ?? error}\n`);
    },
  });

  for (const event of ['server_error', 'authorization.error', 'grant.error',
    'backchannel.error', 'interaction.error', 'end_session.error', 'jwks.error',
    'discovery.error', 'userinfo.error']) {
    provider.on(event, (...rest) => {
      const err = rest.find((x) => x instanceof Error);
      process.stderr.write(`provider.mjs: ${event}: ${err ? `${err.name}: ${err.message}${
        err.error_description ? ` (${err.error_description})` : ''}` : ''}\n`);
    });
  }

  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ issuer, port: actualPort, ready: true })}\n`);
});
