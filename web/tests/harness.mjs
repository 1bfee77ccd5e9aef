// What the browser suite runs against: the real `pacer` binary on a fresh
// SQLite store with the simulated fleet, the real OpenID Provider the Rust
// SSO tests use, Debian's Chromium, and webhooks signed as GitHub signs them.
// Every server listens on 127.0.0.1 on a free port and is stopped when the
// suite ends, whether it passed or not.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const WEB_DIR = resolve(here, '..');
export const REPO_DIR = resolve(WEB_DIR, '..');
export const RESULTS_DIR = join(WEB_DIR, 'test-results');
const TESTS_NODE_MODULES = join(REPO_DIR, 'tests', 'node_modules');

export const BOOTSTRAP_EMAIL = 'admin@localhost';

/** Children to stop even if the runner dies on an uncaught error. */
const children = new Set();
process.on('exit', () => {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // gone already
    }
  }
});

export function freePort() {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolvePort(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** How long the OpenID Provider may take to print its ready line (it takes well under a second here). */
const PROVIDER_START_TIMEOUT_MS = 60_000;

/** A live child's scheduler state and kernel wait channel, from /proc; '' when it is gone. */
function processState(pid) {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8').match(/^State:\s*(.*)$/m)?.[1] ?? '?';
    const wchan = readFileSync(`/proc/${pid}/wchan`, 'utf8') || '-';
    return ` (process ${pid}: state ${status}, waiting in ${wchan})`;
  } catch {
    return '';
  }
}

/** The environment for a child, without any PACER_* the caller's shell happens to carry. */
function cleanEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PACER_')) env[k] = v;
  return { ...env, ...extra };
}

function pacerBin() {
  const bin =
    process.env.PACER_BIN ??
    join(process.env.CARGO_TARGET_DIR ?? join(process.env.HOME ?? '/root', '.cache/pacer/target'), 'debug/pacer');
  if (!existsSync(bin)) {
    throw new Error(`no pacer binary at ${bin}: build it with \`cargo build -p pacer\` (or run \`make test-browser\`), or set PACER_BIN`);
  }
  return bin;
}

async function stopChild(child, name) {
  if (child.exitCode !== null || child.signalCode !== null) {
    children.delete(child);
    return;
  }
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const done = await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)]);
  if (!done) {
    process.stderr.write(`${name} did not stop on SIGTERM; killing it\n`);
    child.kill('SIGKILL');
    await exited;
  }
  children.delete(child);
}

/**
 * Starts `pacer serve` on a fresh store. `oidc` (from startOidcProvider)
 * turns SSO on, which turns local login off; `port` is for a caller that
 * had to name pacer's address before it started (the IdP's redirect URI);
 * `bootstrapFailurePercent` makes that share of simulated runners fail
 * their bootstrap; `reaper` sets `reaper.*` keys; `selfService` is a
 * `self_service:` section, as YAML lines; `prices` are
 * `pricing.overrides` (instance type → USD per hour); `budgets` are the
 * entries of `budgets:`, as objects.
 */
export async function startPacer({
  oidc = null,
  port = null,
  bootDelay = '1s',
  jobTime = '12s',
  bootstrapFailurePercent = 0,
  loginRateLimit = '10/5m',
  reaper = null,
  selfService = null,
  prices = { 'm7i.large': 0.1008 },
  budgets = [],
} = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'pacer-web-'));
  port ??= await freePort();
  const base = `http://127.0.0.1:${port}`;
  const webhookSecret = randomBytes(32).toString('hex');
  const yaml = [
    'server:',
    `  addr: "127.0.0.1:${port}"`,
    `  public_url: "${base}"`,
    'deployment:',
    '  name: webtest',
    'database:',
    '  engine: sqlite',
    `  path: ${JSON.stringify(join(dir, 'pacer.db'))}`,
    'queue:',
    '  engine: memory',
    'fleet:',
    '  engine: simulated',
    '  simulated:',
    `    boot_delay: ${bootDelay}`,
    `    job_time: ${jobTime}`,
    `    bootstrap_failure_percent: ${bootstrapFailurePercent}`,
    'github:',
    '  disabled: true',
    `  webhook_secret: "${webhookSecret}"`,
    `  callback_hmac_secret: "${randomBytes(32).toString('hex')}"`,
    'aws:',
    '  disabled: true',
    'pricing:',
    '  overrides:',
    ...Object.entries(prices).map(([type, usd]) => `    ${type}: ${usd}`),
    'auth:',
    `  jwt_secret: "${randomBytes(32).toString('hex')}"`,
    `  login_rate_limit: "${loginRateLimit}"`,
    '  local:',
    '    enabled: true',
    `    email: ${BOOTSTRAP_EMAIL}`,
    ...(oidc
      ? [
          '  oidc:',
          '    enabled: true',
          `    issuer: "${oidc.issuer}"`,
          `    client_id: "${oidc.clientId}"`,
          `    client_secret: "${oidc.clientSecret}"`,
          `    redirect_url: "${base}/api/auth/oidc/callback"`,
          '    scopes: [openid, email, profile]',
        ]
      : []),
    ...(reaper ? ['reaper:', ...Object.entries(reaper).map(([k, v]) => `  ${k}: ${v}`)] : []),
    ...(selfService ?? []),
    ...(budgets.length ? ['budgets:', ...budgets.map((b) => `  - ${JSON.stringify(b)}`)] : []),
    'logging:',
    '  level: info',
    '  format: text',
    `  output: ${JSON.stringify(join(dir, 'pacer.log'))}`,
    '',
  ].join('\n');
  const config = join(dir, 'pacer.yaml');
  writeFileSync(config, yaml, { mode: 0o600 });

  const child = spawn(pacerBin(), ['serve', '--config', config], {
    cwd: dir,
    env: cleanEnv(),
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.add(child);
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => (stderr += d));

  const pacer = {
    base,
    dir,
    webhookSecret,
    stderr: () => stderr,
    log: () => (existsSync(join(dir, 'pacer.log')) ? readFileSync(join(dir, 'pacer.log'), 'utf8') : ''),
    async stop() {
      await stopChild(child, 'pacer');
      if (!process.env.KEEP_TEST_DIRS) rmSync(dir, { recursive: true, force: true });
    },
  };

  try {
    for (let i = 0; ; i++) {
      if (child.exitCode !== null) throw new Error(`pacer exited with ${child.exitCode} at start:\n${stderr}\n${pacer.log()}`);
      try {
        const res = await fetch(`${base}/healthz`);
        if (res.ok) break;
      } catch {
        // not listening yet
      }
      if (i > 600) throw new Error(`pacer did not answer ${base}/healthz within a minute:\n${stderr}`);
      await sleep(100);
    }
    // The console must be there: a binary built before `make web` serves only the API.
    const index = await fetch(`${base}/`);
    const html = await index.text();
    if (!index.ok || !html.includes('id="app"')) {
      throw new Error(`pacer at ${base}/ does not serve the console (status ${index.status}); run \`make web\` and rebuild:\n${html.slice(0, 300)}`);
    }
    if (!oidc) {
      const password = stderr
        .split('\n')
        .map((l) => l.trim())
        .find((l) => l.startsWith('password: '))
        ?.slice('password: '.length);
      if (!password) throw new Error(`the first start printed no bootstrap password on stderr:\n${stderr}`);
      pacer.password = password;
    }
  } catch (e) {
    await pacer.stop();
    throw e;
  }
  return pacer;
}

/**
 * The OpenID Provider of the Rust SSO tests (tests/oidc/provider.mjs, npm
 * oidc-provider) with one client for `redirectUri` and one verified account.
 * A provider that does not come up is killed and started once more (it once
 * stuck in CI before listening, never here); the first failure is printed.
 */
export async function startOidcProvider({ redirectUri, account }) {
  if (!existsSync(join(TESTS_NODE_MODULES, 'oidc-provider'))) {
    throw new Error('tests/node_modules has no oidc-provider: run `npm ci --prefix tests` (make test-deps does)');
  }
  try {
    return await startOidcProviderOnce({ redirectUri, account });
  } catch (first) {
    process.stderr.write(`${first.message}\nstarting it once more\n`);
    return startOidcProviderOnce({ redirectUri, account });
  }
}

async function startOidcProviderOnce({ redirectUri, account }) {
  const dir = mkdtempSync(join(tmpdir(), 'pacer-idp-'));
  const clientId = 'pacer-console';
  const clientSecret = randomBytes(24).toString('hex');
  const config = join(dir, 'provider.json');
  // Port 0: the provider binds a free port itself and reports it, as in the Rust SSO tests.
  writeFileSync(
    config,
    JSON.stringify({
      port: 0,
      client: { client_id: clientId, client_secret: clientSecret, redirect_uris: [redirectUri] },
      accounts: [account],
    }),
  );
  const child = spawn(process.execPath, [join(REPO_DIR, 'tests/oidc/provider.mjs'), config], {
    cwd: join(REPO_DIR, 'tests'),
    env: cleanEnv({ NODE_NO_WARNINGS: '1' }),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  children.add(child);
  let stderr = '';
  let stdout = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => (stderr += d));
  child.stdout.setEncoding('utf8');
  const startedAt = Date.now();
  let ready;
  try {
    ready = await new Promise((resolveReady, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`did not print its ready line within ${PROVIDER_START_TIMEOUT_MS / 1000} s`)),
        PROVIDER_START_TIMEOUT_MS,
      );
      child.stdout.on('data', (d) => {
        stdout += d;
        for (const line of stdout.split('\n')) {
          if (!line.startsWith('{')) continue;
          try {
            const msg = JSON.parse(line);
            if (msg.ready) {
              clearTimeout(timer);
              resolveReady(msg);
            }
          } catch {
            // a partial line
          }
        }
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`exited (${signal ?? code})`));
      });
    });
  } catch (e) {
    // Say where it was stuck before killing it, so a failure far away can be read.
    const where = processState(child.pid);
    child.kill('SIGKILL');
    children.delete(child);
    rmSync(dir, { recursive: true, force: true });
    throw new Error(
      `the OpenID Provider (tests/oidc/provider.mjs) ${e.message} after ${Date.now() - startedAt} ms${where}\n` +
        `stdout:\n${stdout}\nstderr:\n${stderr}`,
    );
  }
  return {
    issuer: ready.issuer,
    clientId,
    clientSecret,
    stderr: () => stderr,
    async stop() {
      await stopChild(child, 'oidc provider');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A real `workflow_job` `queued` payload from GitHub's published examples, for our repo and labels,
 * sent by `sender`; the repository is private unless `visibility` says otherwise (pacer refuses
 * public ones by default).
 */
export function queuedPayload({ githubJobId, repo, labels, visibility = 'private', sender = 'octo-dev' }) {
  const examples = join(TESTS_NODE_MODULES, '@octokit/webhooks-examples/api.github.com/index.json');
  if (!existsSync(examples)) {
    throw new Error('tests/node_modules has no @octokit/webhooks-examples: run `npm ci --prefix tests` (make test-deps does)');
  }
  const all = JSON.parse(readFileSync(examples, 'utf8'));
  const example = all
    .find((e) => e.name === 'workflow_job')
    .examples.find((e) => e.action === 'queued' && e.workflow_job.status === 'queued' && e.installation);
  const payload = structuredClone(example);
  const [owner, name] = repo.split('/');
  const runId = Math.floor(githubJobId / 2) + 1;
  payload.workflow_job.id = githubJobId;
  payload.workflow_job.run_id = runId;
  payload.workflow_job.labels = labels;
  payload.workflow_job.name = `build ${githubJobId}`;
  payload.workflow_job.html_url = `https://github.com/${repo}/actions/runs/${runId}/job/${githubJobId}`;
  payload.workflow_job.run_url = `https://api.github.com/repos/${repo}/actions/runs/${runId}`;
  payload.workflow_job.runner_id = null;
  payload.workflow_job.runner_name = null;
  payload.repository.full_name = repo;
  payload.repository.name = name;
  payload.repository.owner.login = owner;
  payload.repository.private = visibility !== 'public';
  payload.repository.visibility = visibility;
  payload.sender.login = sender;
  return payload;
}

/** POSTs a webhook signed with the App's secret, as GitHub does (X-Hub-Signature-256). */
export async function sendWebhook(pacer, event, payload) {
  const body = JSON.stringify(payload);
  const signature = `sha256=${createHmac('sha256', pacer.webhookSecret).update(body).digest('hex')}`;
  const res = await fetch(`${pacer.base}/api/webhook`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'x-github-event': event,
      'x-github-delivery': randomUUID(),
      'x-hub-signature-256': signature,
      'user-agent': 'GitHub-Hookshot/pacer-web-tests',
    },
    body,
  });
  return { status: res.status, body: await res.json().catch(() => null) };
}

export async function launchBrowser() {
  const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
  if (!existsSync(executablePath)) {
    throw new Error(`no Chromium at ${executablePath}: install Debian's package (apt-get install -y chromium; make test does)`);
  }
  return chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

export const WIDE = { width: 1280, height: 800 };
export const NARROW = { width: 390, height: 800 };

/** A fresh browser profile (its own cookies) at 1280×800, light by default. */
export async function newContext(browser, { viewport = WIDE, colorScheme = 'light' } = {}) {
  const context = await browser.newContext({ viewport, colorScheme, locale: 'en-GB', timezoneId: 'UTC' });
  context.setDefaultTimeout(20_000);
  context.setDefaultNavigationTimeout(30_000);
  return context;
}

/**
 * Saves a full-page screenshot for people to review (not compared by the
 * tests): web/test-results/<name>.png.
 */
export async function screenshot(page, name) {
  mkdirSync(RESULTS_DIR, { recursive: true });
  // Let fonts settle and pending animations finish a frame.
  await page.evaluate(() => document.fonts?.ready);
  await page.screenshot({ path: join(RESULTS_DIR, `${name}.png`), fullPage: true, animations: 'disabled' });
}

/**
 * Collects what the console's pages log as errors, so a test can assert they
 * stayed clean. Messages while the page shows another origin (the IdP's own
 * pages) are not the console's. Refusals the console handles (401, 403, 404,
 * 409, 422, 429) are expected answers, not errors.
 */
export function watchErrors(page, origin = null) {
  const errors = [];
  const ours = () => !origin || new URL(page.url()).origin === origin;
  page.on('pageerror', (e) => {
    if (ours()) errors.push(`pageerror: ${e.message}`);
  });
  page.on('console', (m) => {
    if (m.type() !== 'error' || !ours()) return;
    if (/Failed to load resource: the server responded with a status of (401|403|404|409|422|429)/.test(m.text())) return;
    errors.push(`console: ${m.text()} (${m.location()?.url ?? ''})`);
  });
  return errors;
}

/** Fills the sign-in form and submits it. */
export async function signIn(page, email, password) {
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
}

/** Signs `page` in as the bootstrap admin and waits for Home. */
export async function signInAsAdmin(page, pacer) {
  await page.goto(`${pacer.base}/login`);
  await signIn(page, BOOTSTRAP_EMAIL, pacer.password);
  await page.waitForURL((u) => u.pathname === '/');
}

/**
 * Calls pacer's API from `page` with its session, as a script would:
 * `{status, body}`. For what a test needs in place before it looks.
 */
export function callApi(page, method, path, body) {
  return page.evaluate(
    async ([method, path, body]) => {
      const res = await fetch(path, { method, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      return { status: res.status, body: res.status === 204 ? null : await res.json() };
    },
    [method, path, body],
  );
}

/** The form field's error line (Field.svelte renders it under the control). */
export function fieldError(page, id) {
  return page.locator(`[data-field="${id}"] [role="alert"]`);
}

/**
 * Runs `body({pacer, page, context})` against a pacer of its own (started
 * with `options`) in a browser profile of its own, signed in as the
 * bootstrap admin unless `signedIn` is false; then the page must have
 * logged no script errors. Everything is stopped however `body` ends, so a
 * test needs nothing another left behind.
 */
export async function onFreshPacer(browser, body, { signedIn = true, ...options } = {}) {
  const pacer = await startPacer(options);
  const context = await newContext(browser);
  try {
    const page = await context.newPage();
    const errors = watchErrors(page, pacer.base);
    if (signedIn) await signInAsAdmin(page, pacer);
    await body({ pacer, page, context });
    assert.deepEqual(errors, [], 'the page logged no script errors');
  } finally {
    await context.close();
    await pacer.stop();
  }
}

/**
 * The console's own formatting (web/src/lib/format.ts: money, durations,
 * minutes), compiled with TypeScript for Node, so a test can say what a
 * figure from the API must read as on the page.
 */
export async function consoleFormat() {
  const { default: ts } = await import('typescript');
  const source = readFileSync(join(WEB_DIR, 'src/lib/format.ts'), 'utf8');
  const { outputText } = ts.transpileModule(source, {
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, verbatimModuleSyntax: false },
  });
  const dir = mkdtempSync(join(tmpdir(), 'pacer-format-'));
  const file = join(dir, 'format.mjs');
  writeFileSync(file, outputText);
  try {
    return await import(pathToFileURL(file).href);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
