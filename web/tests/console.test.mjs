// The console in a real browser against a real pacer: the flow a newcomer
// follows (README, "The web console"), from the bootstrap password to a
// job's timeline, then the viewer's read-only console. Each test runs
// against a pacer of its own and puts in place, through the API, what it
// needs before it looks, so any one test runs alone and in any order.
//
//   PACER_BIN=…/debug/pacer node --test tests/   (make test-browser)
//   node --test --test-name-pattern='<part of a name>' tests/   (one test)
//
// Screenshots of every page land in web/test-results/ for review.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  BOOTSTRAP_EMAIL,
  NARROW,
  callApi,
  fieldError,
  launchBrowser,
  newContext,
  onFreshPacer,
  queuedPayload,
  screenshot,
  sendWebhook,
  signIn,
  watchErrors,
} from './harness.mjs';

/** Long enough for a loaded 2-core machine; nothing here measures time. */
const JOB_TIMEOUT = 120_000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitForPath(page, path) {
  await page.waitForURL((u) => u.pathname + u.search === path);
}

/** Opens `path` directly (a deep link) and waits for its page to draw. */
async function visit(page, base, path) {
  await page.goto(base + path);
  await page.locator('[data-page]').first().waitFor();
}

/** From `from`, follows the menu's link `link` to `path`, as a person would. */
async function follow(page, base, link, path, from = '/') {
  await visit(page, base, from);
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: link, exact: true }).click();
  await waitForPath(page, path);
}

const project = 'acme';
const pool = 'linux-x64';
const repo = 'acme/app';
const viewerEmail = 'viewer@example.com';

/** A GitHub job id no other test's job has. */
let lastGithubJobId = 4_100_000 + Math.floor(Math.random() * 100_000) * 10;
const newGithubJobId = () => (lastGithubJobId += 10);

/**
 * Through the API, as a script would: project `acme`, and unless told
 * otherwise its pool `linux-x64` (labels linux and x64, m7i.large then
 * m6i.large, spot-fallback, at most 4) and the binding of `acme/app`.
 */
async function setUp(page, { withPool = true, withRepo = true } = {}) {
  const made = await callApi(page, 'POST', '/api/projects', { name: project });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  if (withPool) {
    const pooled = await callApi(page, 'POST', '/api/pools', {
      project_id: made.body.id,
      name: pool,
      labels: ['linux', 'x64'],
      instance_types: ['m7i.large', 'm6i.large'],
      subnets: ['subnet-0abc1234'],
      ami: 'ami-0123456789abcdef0',
      boot_timeout: '5m',
      market: 'spot-fallback',
      max_runners: 4,
    });
    assert.equal(pooled.status, 201, JSON.stringify(pooled.body));
  }
  if (withRepo) {
    const bound = await callApi(page, 'POST', '/api/repos', { repo, project_id: made.body.id });
    assert.equal(bound.status, 201, JSON.stringify(bound.body));
  }
  return made.body.id;
}

/** Sends a signed queued webhook for `acme/app`; the job's id. */
async function queueJob(pacer, githubJobId) {
  const sent = await sendWebhook(pacer, 'workflow_job', queuedPayload({ githubJobId, repo, labels: ['self-hosted', 'linux', 'x64'] }));
  assert.equal(sent.status, 202, JSON.stringify(sent.body));
  assert.ok(sent.body.job_id, 'the webhook answer names the job');
  return sent.body.job_id;
}

/** Queues a job and waits, through the API, until it completed; the job's id. */
async function completedJob(pacer, page, githubJobId = newGithubJobId()) {
  const jobId = await queueJob(pacer, githubJobId);
  const deadline = Date.now() + JOB_TIMEOUT;
  for (;;) {
    const job = await callApi(page, 'GET', `/api/jobs/${jobId}`);
    if (job.body?.state === 'completed') return jobId;
    assert.ok(Date.now() < deadline, `job ${jobId} did not complete: ${JSON.stringify(job.body)}`);
    await sleep(500);
  }
}

/** Waits until pacer has settled a finished job (its runner ended too); its usage. */
async function settledUsage(page, jobId) {
  const deadline = Date.now() + JOB_TIMEOUT;
  for (;;) {
    const usage = (await callApi(page, 'GET', `/api/jobs/${jobId}`)).body?.usage ?? null;
    if (usage) return usage;
    assert.ok(Date.now() < deadline, `job ${jobId} was never settled`);
    await sleep(250);
  }
}

/** Creates a viewer through the API; its one-time password. */
async function createViewer(page) {
  const made = await callApi(page, 'POST', '/api/users', { email: viewerEmail, role: 'viewer' });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  return made.body.password;
}

describe('the console, as an admin and then a viewer, against pacer serve', () => {
  let browser;

  before(async () => {
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
  });

  test('a deep link while signed out asks for a sign-in, refuses a wrong password plainly, then lands where it asked', async () => {
    await onFreshPacer(
      browser,
      async ({ pacer, page }) => {
        await page.goto(`${pacer.base}/projects`);
        await waitForPath(page, '/login?next=%2Fprojects');
        await page.getByRole('heading', { name: 'Sign in to pacer' }).waitFor();
        // Local login only: no SSO button without OIDC.
        assert.equal(await page.getByRole('link', { name: /^Sign in with/ }).count(), 0);
        await screenshot(page, 'login-light');

        await signIn(page, BOOTSTRAP_EMAIL, 'not-the-password');
        const error = page.locator('[data-login-error]');
        await error.waitFor();
        assert.match(await error.innerText(), /do not match an enabled account/);
        assert.equal(await page.getByLabel('Password').inputValue(), '', 'the wrong password is cleared');
        await screenshot(page, 'login-wrong-password');

        await signIn(page, BOOTSTRAP_EMAIL, pacer.password);
        await waitForPath(page, '/projects');
        await page.getByRole('heading', { name: 'Projects' }).waitFor();
        await page.getByText('No projects yet').waitFor();
        await screenshot(page, 'projects-empty');
      },
      { signedIn: false },
    );
  });

  test('a project: the form says what is wrong next to the field, then creates it', async () => {
    await onFreshPacer(browser, async ({ pacer, page }) => {
      await visit(page, pacer.base, '/projects');
      await page.getByRole('button', { name: 'New project' }).click();
      const dialog = page.getByRole('dialog', { name: 'New project' });
      await dialog.waitFor();
      // Keyboard-usable: the name field has the focus, Enter submits.
      await page.keyboard.type('has space');
      await page.keyboard.press('Enter');
      await fieldError(page, 'project-name').waitFor();
      assert.match(await fieldError(page, 'project-name').innerText(), /letters, digits/);
      assert.equal(await dialog.getByLabel('Name').getAttribute('aria-invalid'), 'true');

      // Org scope needs its org: the same rule the API enforces.
      await dialog.getByLabel('Name').fill(project);
      await dialog.getByLabel('Scope').selectOption('org');
      await dialog.getByRole('button', { name: 'Create project' }).click();
      await fieldError(page, 'project-org').waitFor();
      await screenshot(page, 'project-form-errors');

      // Public repositories are refused unless allowed, and allowing them says why that is risky.
      const allowPublic = dialog.getByLabel('Run jobs of public repositories too');
      assert.equal(await allowPublic.isChecked(), false);
      await allowPublic.check();
      assert.match(await dialog.locator('[data-public-warning]').innerText(), /Anyone can open a pull request/);
      await screenshot(page, 'project-form-public-warning');
      await allowPublic.uncheck();
      await dialog.locator('[data-public-warning]').waitFor({ state: 'detached' });

      await dialog.getByLabel('Scope').selectOption('repo');
      await dialog.getByRole('button', { name: 'Create project' }).click();
      await dialog.waitFor({ state: 'detached' });
      const row = page.locator(`tr[data-row="${project}"]`);
      await row.waitFor();
      assert.match(await row.innerText(), /repositories/);
      assert.match(await row.locator('[data-public-repos]').innerText(), /refused/);
    });
  });

  test('a second project with the same name is refused by pacer, and the error sits by the name', async () => {
    await onFreshPacer(browser, async ({ pacer, page }) => {
      await setUp(page, { withPool: false, withRepo: false });
      await visit(page, pacer.base, '/projects');
      await page.getByRole('button', { name: 'New project' }).click();
      const dialog = page.getByRole('dialog', { name: 'New project' });
      await dialog.getByLabel('Name').fill(project);
      await dialog.getByRole('button', { name: 'Create project' }).click();
      // Passes the form's own checks; the server's 409 names the field.
      await fieldError(page, 'project-name').waitFor();
      assert.ok((await fieldError(page, 'project-name').innerText()).length > 0);
      await page.keyboard.press('Escape');
      await dialog.waitFor({ state: 'detached' });
    });
  });

  test('a pool: bad AWS ids are caught before saving, then the pool is created', async () => {
    await onFreshPacer(browser, async ({ pacer, page }) => {
      await setUp(page, { withPool: false, withRepo: false });
      await follow(page, pacer.base, 'Pools', '/pools', '/projects');
      await page.getByText('No pools yet').waitFor();
      await page.getByRole('button', { name: 'New pool' }).click();
      const dialog = page.getByRole('dialog', { name: 'New pool' });
      await dialog.waitFor();
      await dialog.getByLabel('Name').fill(pool);
      await dialog.getByLabel('Labels').fill('linux, x64');
      await dialog.getByLabel('Instance types').fill('m7i.large, m6i.large');
      await dialog.getByLabel('Subnets').fill('subnet-XYZ');
      await dialog.getByLabel('AMI').fill('ubuntu');
      await dialog.getByLabel('Boot timeout').fill('12hours');
      const sent = [];
      page.on('request', (r) => r.method() === 'POST' && sent.push(r.url()));
      await dialog.getByRole('button', { name: 'Create pool' }).click();
      for (const id of ['pool-subnets', 'pool-ami', 'pool-boot']) await fieldError(page, id).waitFor();
      assert.match(await fieldError(page, 'pool-subnets').innerText(), /subnet-XYZ/);
      // Focus moves on the frame after the errors are drawn.
      await page.waitForFunction(() => document.activeElement?.id === 'pool-subnets', null, { timeout: 5000 }).catch(() => {});
      assert.equal(await page.evaluate(() => document.activeElement?.id), 'pool-subnets', 'focus goes to the first wrong field');
      assert.deepEqual(sent, [], 'nothing is sent while a field is wrong');
      await screenshot(page, 'pool-form-errors');

      await dialog.getByLabel('Subnets').fill('subnet-0abc1234');
      await dialog.getByLabel('AMI').fill('ami-0123456789abcdef0');
      await dialog.getByLabel('Boot timeout').fill('5m');
      await dialog.getByLabel('Market').selectOption('spot-fallback');
      await dialog.getByLabel('Max runners').fill('4');
      await dialog.getByRole('button', { name: 'Create pool' }).click();
      await dialog.waitFor({ state: 'detached' });
      const row = page.locator(`tr[data-row="${pool}"]`);
      await row.waitFor();
      const text = await row.innerText();
      assert.match(text, /acme/);
      assert.match(text, /0 \/ 4/);
      assert.match(text, /spot-fallback/);
    });
  });

  test('a pool edit sends only what changed and shows it', async () => {
    await onFreshPacer(browser, async ({ pacer, page }) => {
      await setUp(page, { withRepo: false });
      await visit(page, pacer.base, '/pools');
      await page.locator(`tr[data-row="${pool}"]`).filter({ hasText: '0 / 4' }).waitFor();
      const patches = [];
      page.on('request', (r) => r.method() === 'PATCH' && patches.push(r.postDataJSON()));
      await page.getByRole('button', { name: `Edit ${pool}` }).click();
      const dialog = page.getByRole('dialog', { name: `Edit pool ${pool}` });
      assert.equal(await dialog.getByLabel('Project').isDisabled(), true, 'a pool cannot move to another project');
      await dialog.getByLabel('Max runners').fill('5');
      await dialog.getByRole('button', { name: 'Save changes' }).click();
      await dialog.waitFor({ state: 'detached' });
      await page.locator(`tr[data-row="${pool}"]`).filter({ hasText: '0 / 5' }).waitFor();
      assert.deepEqual(patches, [{ max_runners: 5 }], 'only the changed field is sent');
      await screenshot(page, 'pools-light');
    });
  });

  test('a repository binding, checked as owner/name', async () => {
    await onFreshPacer(browser, async ({ pacer, page }) => {
      await setUp(page, { withPool: false, withRepo: false });
      await follow(page, pacer.base, 'Repositories', '/repos');
      await page.getByRole('button', { name: 'Bind a repository' }).click();
      const dialog = page.getByRole('dialog', { name: 'Bind a repository' });
      await dialog.getByLabel('Repository').fill('acme');
      await dialog.getByRole('button', { name: 'Bind repository' }).click();
      await fieldError(page, 'repo-name').waitFor();
      await dialog.getByLabel('Repository').fill(repo);
      await dialog.getByRole('button', { name: 'Bind repository' }).click();
      await dialog.waitFor({ state: 'detached' });
      await page.locator(`tr[data-row="${repo}"]`).waitFor();
      await screenshot(page, 'repos-light');
    });
  });

  test('a signed queued webhook becomes a job the jobs page shows reaching completed', async () => {
    await onFreshPacer(browser, async ({ pacer, page }) => {
      await setUp(page);
      await follow(page, pacer.base, 'Jobs', '/jobs');

      const jobId = await queueJob(pacer, newGithubJobId());

      // The table polls: no reload, the row appears and walks to completed.
      const row = page.locator(`tr[data-job="${jobId}"]`);
      await row.waitFor({ timeout: JOB_TIMEOUT });
      await row.locator('[data-state="running"]').waitFor({ timeout: JOB_TIMEOUT });
      await screenshot(page, 'jobs-running');
      await row.locator('[data-state="completed"]').waitFor({ timeout: JOB_TIMEOUT });
      const text = await row.innerText();
      assert.match(text, new RegExp(repo));
      assert.match(text, new RegExp(`${project}\\s+pool ${pool}`));

      // Filters go into the URL and narrow the table.
      await page.getByLabel('Status').selectOption('failed');
      await waitForPath(page, '/jobs?status=failed');
      await page.getByText('No jobs match these filters').waitFor();
      await page.getByLabel('Status').selectOption('completed');
      await row.waitFor();
      await screenshot(page, 'jobs-light');
    });
  });

  test("the job's page shows its timeline with the time between steps, its runner and its GitHub run", async () => {
    await onFreshPacer(browser, async ({ pacer, page }) => {
      await setUp(page);
      const githubJobId = newGithubJobId();
      const jobId = await completedJob(pacer, page, githubJobId);
      await visit(page, pacer.base, '/jobs');
      await page.locator(`tr[data-job="${jobId}"] a`).first().click();
      await waitForPath(page, `/jobs/${jobId}`);
      const timeline = page.locator('[data-timeline]');
      await timeline.waitFor();
      const steps = await timeline.locator('tr[data-step]').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-step')));
      for (const state of ['queued', 'claimed', 'starting', 'running', 'completed']) {
        assert.ok(steps.includes(state), `the timeline has ${state}: ${steps}`);
      }
      assert.equal(steps.at(-1), 'completed');
      const deltas = await timeline.locator('tr[data-step] td:nth-child(3)').allInnerTexts();
      assert.equal(deltas[0].trim(), '—', 'the first step has no previous one');
      for (const d of deltas.slice(1)) assert.match(d.trim(), /^\+[\d.]+(s|m|h)/, `a delta: ${d}`);

      // Settled once its runner is done: the page shows the API's figures.
      const usage = await settledUsage(page, jobId);
      await page.reload();
      const cost = page.locator('[data-cost]');
      await cost.waitFor();
      const dollars = `$${(usage.cost.total_micro_usd / 1_000_000).toFixed(4)}`;
      assert.match(await cost.innerText(), new RegExp(`^\\${dollars} \\(job \\$[\\d.]+, overhead \\$[\\d.]+; price from override\\)`));
      assert.match(await page.locator('[data-timings]').innerText(), /\(launch [\d.]+m?s, boot [\d.]+m?s\)/);

      const runner = page.locator('[data-runner]');
      assert.match(await runner.innerText(), /webtest/, "the runner's name carries the deployment");
      assert.match(await runner.innerText(), /\$0\.1008\/h \(override\)/, 'the price stamped at launch');
      assert.match(await runner.innerText(), /Instance\s+i-/);
      const github = page.getByRole('link', { name: /Open the run on GitHub/ });
      assert.equal(await github.getAttribute('href'), `https://github.com/${repo}/actions/runs/${Math.floor(githubJobId / 2) + 1}/job/${githubJobId}`);
      assert.match(await page.locator('dl.facts').first().innerText(), /octo-dev/, 'the sender');
      await screenshot(page, 'job-light');
    });
  });

  test('the runners page lists the finished runner with its type and market', async () => {
    await onFreshPacer(browser, async ({ pacer, page }) => {
      await setUp(page);
      await completedJob(pacer, page);
      await follow(page, pacer.base, 'Runners', '/runners');
      await page.getByLabel('Show').selectOption('all');
      const row = page.locator('tr[data-runner]').first();
      await row.waitFor();
      const text = await row.innerText();
      assert.match(text, /done/);
      assert.match(text, /m7i\.large/);
      await screenshot(page, 'runners-light');
    });
  });

  test('the audit log shows each step, and filters by action', async () => {
    await onFreshPacer(browser, async ({ pacer, page }) => {
      await setUp(page);
      const pools = await callApi(page, 'GET', '/api/pools');
      const edited = await callApi(page, 'PATCH', `/api/pools/${pools.body.items[0].id}`, { max_runners: 5 });
      assert.equal(edited.status, 200, JSON.stringify(edited.body));
      await follow(page, pacer.base, 'Audit log', '/audit');
      for (const action of ['project.created', 'pool.created', 'pool.updated', 'repo.bound', 'auth.login_succeeded']) {
        await page.locator(`tr[data-action="${action}"]`).first().waitFor();
      }
      // The admin's actions read as their email, not an id.
      assert.match(await page.locator('tr[data-action="project.created"]').first().innerText(), /admin@localhost/);
      await screenshot(page, 'audit-light');

      await page.getByLabel('Action').fill('pool.created');
      await page.getByRole('button', { name: 'Filter' }).click();
      await waitForPath(page, '/audit?action=pool.created');
      await page.waitForFunction(() => {
        const rows = [...document.querySelectorAll('tr[data-action]')];
        return rows.length === 1 && rows[0].getAttribute('data-action') === 'pool.created';
      });
      // A trailing * filters by kind: every pool event, and nothing else.
      await page.getByLabel('Action').fill('pool.*');
      await page.getByRole('button', { name: 'Filter', exact: true }).click();
      await waitForPath(page, '/audit?action=pool.*');
      await page.waitForFunction(() => {
        const actions = [...document.querySelectorAll('tr[data-action]')].map((r) => r.getAttribute('data-action'));
        return actions.includes('pool.created') && actions.includes('pool.updated') && actions.every((a) => a.startsWith('pool.'));
      });
      await page.getByRole('button', { name: 'Clear filters' }).click();
      await page.locator('tr[data-action="repo.bound"]').waitFor();
    });
  });

  test('home shows jobs in flight, queue times, and the jobs no project or pool served', async () => {
    await onFreshPacer(browser, async ({ pacer, page }) => {
      await setUp(page);
      const githubJobId = newGithubJobId();
      const usage = await settledUsage(page, await completedJob(pacer, page, githubJobId));
      // Two of the commonest setup gaps: an unbound repository, labels no pool covers.
      const unbound = await sendWebhook(pacer, 'workflow_job', queuedPayload({ githubJobId: githubJobId + 1, repo: 'acme/unbound', labels: ['self-hosted', 'linux'] }));
      assert.equal(unbound.status, 200);
      const unmatched = await sendWebhook(pacer, 'workflow_job', queuedPayload({ githubJobId: githubJobId + 2, repo, labels: ['self-hosted', 'gpu'] }));
      assert.equal(unmatched.status, 202);
      // A public repository's job, refused: anyone's pull request could run on the fleet.
      const publicJob = queuedPayload({ githubJobId: githubJobId + 3, repo, labels: ['self-hosted', 'linux'], visibility: 'public' });
      const refused = await sendWebhook(pacer, 'workflow_job', publicJob);
      assert.equal(refused.status, 200);

      await follow(page, pacer.base, 'Home', '/', '/jobs');
      await page.locator('[data-unbound]').filter({ hasText: 'acme/unbound' }).waitFor();
      await page.locator('[data-unmatched]').filter({ hasText: 'gpu' }).waitFor();
      await page.locator('[data-public-refused]').filter({ hasText: repo }).waitFor();
      assert.match(await page.locator('[data-public-refused]').innerText(), /sent by octo-dev/);
      // The completed job ran: its queue time counts in the percentiles.
      await page.waitForFunction(() => !/^[·—]$/.test(document.querySelector('[data-stat="queue-p50"] .tile-value')?.textContent?.trim() ?? '·'));
      assert.match(await page.locator('[data-stat="queue-p95"] .tile-value').innerText(), /^[\d.]+(s|m|h)/);
      assert.match(await page.locator('[data-stat="jobs"]').innerText(), /1 succeeded/);
      // The day's cost is the settled job's, as the API computed it.
      const total = usage.cost.total_micro_usd;
      const dollars = `$${(total / 1_000_000).toFixed(total < 1_000_000 ? 4 : 2)}`;
      assert.equal((await page.locator('[data-stat="cost"] .tile-value').innerText()).trim(), dollars);
      assert.match(await page.locator('[data-covered]').innerText(), /finished from .* to .*, as of/);
      for (const s of ['queued', 'claimed', 'starting', 'running']) await page.locator(`[data-inflight="${s}"]`).waitFor();
      await screenshot(page, 'home-light');
    });
  });

  test('deleting asks first, and says why pacer refuses', async () => {
    await onFreshPacer(browser, async ({ pacer, page }) => {
      await setUp(page);
      await follow(page, pacer.base, 'Projects', '/projects');
      await page.getByRole('button', { name: `Delete ${project}` }).click();
      const confirm = page.getByRole('dialog', { name: `Delete project ${project}?` });
      await confirm.waitFor();
      // The safe choice has the focus.
      assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'Keep it');
      await confirm.getByRole('button', { name: 'Delete project' }).click();
      // It still has a pool and a binding: pacer's 409 names them.
      await confirm.locator('[role="alert"]').waitFor();
      assert.match(await confirm.locator('[role="alert"]').innerText(), /pool|binding|linux-x64|acme\/app/i);
      await screenshot(page, 'project-delete-refused');
      await confirm.getByRole('button', { name: 'Keep it' }).click();
      await confirm.waitFor({ state: 'detached' });

      // A throwaway project goes after a confirmation.
      await page.getByRole('button', { name: 'New project' }).click();
      const dialog = page.getByRole('dialog', { name: 'New project' });
      await dialog.getByLabel('Name').fill('scratch');
      await dialog.getByRole('button', { name: 'Create project' }).click();
      await page.locator('tr[data-row="scratch"]').waitFor();
      await page.getByRole('button', { name: 'Delete scratch' }).click();
      await page.getByRole('dialog', { name: 'Delete project scratch?' }).getByRole('button', { name: 'Delete project' }).click();
      await page.locator('tr[data-row="scratch"]').waitFor({ state: 'detached' });
      await screenshot(page, 'projects-light');
    });
  });

  test('an admin can terminate a live runner', async () => {
    await onFreshPacer(browser, async ({ pacer, page }) => {
      await setUp(page);
      await queueJob(pacer, newGithubJobId());
      await page.goto(`${pacer.base}/runners`);
      const row = page.locator('tr[data-runner]').filter({ has: page.getByRole('button', { name: /^Terminate/ }) }).first();
      await row.waitFor({ timeout: JOB_TIMEOUT });
      const name = await row.getAttribute('data-runner');
      await screenshot(page, 'runners-live');
      await row.getByRole('button', { name: /^Terminate/ }).click();
      const confirm = page.getByRole('dialog', { name: `Terminate ${name}?` });
      await confirm.getByRole('button', { name: 'Terminate runner' }).click();
      await confirm.waitFor({ state: 'detached' });
      await page.getByText(`${name} was terminated.`).waitFor();
      // Gone from the live list.
      await page.locator(`tr[data-runner="${name}"]`).waitFor({ state: 'detached', timeout: JOB_TIMEOUT });
      await visit(page, pacer.base, '/audit?action=runner.terminated');
      await page.locator('tr[data-action="runner.terminated"]').waitFor();
    });
  });

  test('the Users page creates a viewer with a one-time password', async () => {
    await onFreshPacer(browser, async ({ pacer, page }) => {
      await follow(page, pacer.base, 'Users', '/users');
      await page.getByRole('button', { name: 'New user' }).click();
      const dialog = page.getByRole('dialog', { name: 'New user' });
      await dialog.getByLabel('Email').fill('not-an-email');
      await dialog.getByRole('button', { name: 'Create user' }).click();
      await fieldError(page, 'user-email').waitFor();
      await dialog.getByLabel('Email').fill(viewerEmail);
      assert.equal(await dialog.getByLabel('Role').inputValue(), 'viewer', 'new users are viewers unless chosen otherwise');
      await dialog.getByRole('button', { name: 'Create user' }).click();
      const secret = dialog.locator('[data-password]');
      await secret.waitFor();
      const password = (await secret.innerText()).trim();
      assert.ok(password.length >= 12, password);
      await screenshot(page, 'user-created');
      await dialog.getByRole('button', { name: 'Done' }).click();
      const row = page.locator(`tr[data-user="${viewerEmail}"]`);
      await row.waitFor();
      assert.equal(await row.locator('select').inputValue(), 'viewer');
      await screenshot(page, 'users-light');
      await visit(page, pacer.base, '/audit?action=user.created');
      await page.locator('tr[data-action="user.created"]').filter({ hasText: viewerEmail }).waitFor();

      // The password shown is the one that signs the viewer in.
      const context = await newContext(browser);
      try {
        const vpage = await context.newPage();
        await vpage.goto(`${pacer.base}/login`);
        await signIn(vpage, viewerEmail, password);
        await waitForPath(vpage, '/');
      } finally {
        await context.close();
      }
    });
  });

  test('a viewer sees every page read-only: no edit controls, no audit log, no users', async () => {
    await onFreshPacer(browser, async ({ pacer, page: adminPage }) => {
      await setUp(adminPage);
      const jobId = await completedJob(pacer, adminPage);
      await settledUsage(adminPage, jobId);
      let password = await createViewer(adminPage);

      const context = await newContext(browser);
      const page = await context.newPage();
      const errors = watchErrors(page, pacer.base);
      try {
        await page.goto(`${pacer.base}/pools`);
        await waitForPath(page, '/login?next=%2Fpools');
        await signIn(page, viewerEmail, password);
        await waitForPath(page, '/pools');
        await page.locator(`tr[data-row="${pool}"]`).waitFor();
        assert.equal(await page.locator('[data-role]').innerText(), 'viewer');

        const nav = page.getByRole('navigation', { name: 'Main' });
        assert.equal(await nav.getByRole('link', { name: 'Audit log' }).count(), 0);
        assert.equal(await nav.getByRole('link', { name: 'Users' }).count(), 0);

        const checks = [
          ['/projects', `tr[data-row="${project}"]`],
          ['/pools', `tr[data-row="${pool}"]`],
          ['/repos', `tr[data-row="${repo}"]`],
          ['/runners?show=all', 'tr[data-runner]'],
          ['/jobs', `tr[data-job="${jobId}"]`],
          [`/jobs/${jobId}`, '[data-timeline]'],
          ['/', '[data-inflight="running"]'],
          ['/stats', '[data-table="pools"] tbody tr'],
        ];
        for (const [path, ready] of checks) {
          await visit(page, pacer.base, path);
          await page.locator(ready).first().waitFor();
          const controls = page.getByRole('button', { name: /^(New |Bind |Edit|Delete|Unbind|Terminate)/ });
          assert.equal(await controls.count(), 0, `${path} shows no edit controls to a viewer`);
        }
        await visit(page, pacer.base, '/projects');
        await page.locator(`tr[data-row="${project}"]`).waitFor();
        await screenshot(page, 'viewer-projects');

        await visit(page, pacer.base, '/audit');
        await page.getByText('This page is for admins.').waitFor();
        await screenshot(page, 'viewer-audit-refused');

        // A viewer may still change their own password (the one-time one, first of all).
        await page.getByRole('button', { name: 'Password' }).click();
        const dialog = page.getByRole('dialog', { name: 'Change your password' });
        await dialog.getByLabel('Current password').fill('not-it');
        await dialog.getByLabel('New password', { exact: true }).fill('a-longer-passphrase');
        await dialog.getByLabel('New password again').fill('a-longer-passphrase');
        await dialog.getByRole('button', { name: 'Change password' }).click();
        await fieldError(page, 'current-password').waitFor();
        await screenshot(page, 'password-wrong-current');
        await dialog.getByLabel('Current password').fill(password);
        await dialog.getByRole('button', { name: 'Change password' }).click();
        await dialog.getByText('Your password was changed.').waitFor();
        await dialog.getByRole('button', { name: 'Done' }).click();
        password = 'a-longer-passphrase';

        await page.getByRole('button', { name: 'Sign out' }).click();
        await waitForPath(page, '/login');
        await signIn(page, viewerEmail, password);
        await waitForPath(page, '/');
        assert.deepEqual(errors.filter((e) => !/403/.test(e)), []);
      } finally {
        await context.close();
      }
    });
  });

  test('an admin disables the viewer, whose session ends at once', async () => {
    await onFreshPacer(browser, async ({ pacer, page }) => {
      const password = await createViewer(page);
      const context = await newContext(browser);
      try {
        const vpage = await context.newPage();
        await vpage.goto(`${pacer.base}/login`);
        await signIn(vpage, viewerEmail, password);
        await waitForPath(vpage, '/');

        await visit(page, pacer.base, '/users');
        await page.getByRole('button', { name: `Disable ${viewerEmail}` }).click();
        await page.getByRole('dialog', { name: `Disable ${viewerEmail}?` }).getByRole('button', { name: 'Disable user' }).click();
        await page.locator(`tr[data-user="${viewerEmail}"] .badge`).filter({ hasText: 'disabled' }).waitFor();

        // The viewer's next request finds the session over, and signing in again is refused.
        await vpage.goto(`${pacer.base}/jobs`);
        await waitForPath(vpage, '/login?next=%2Fjobs');
        await signIn(vpage, viewerEmail, password);
        await vpage.locator('[data-login-error]').waitFor();
      } finally {
        await context.close();
      }
    });
  });

  test('every page, light and dark, wide and narrow, for review', async () => {
    await onFreshPacer(browser, async ({ pacer, page, context }) => {
      await setUp(page);
      const jobId = await completedJob(pacer, page);
      await settledUsage(page, jobId);
      const pages = [
        ['home', '/', '[data-inflight]'],
        ['stats', '/stats', '[data-chart="cost-by-pool"] canvas'],
        ['jobs', '/jobs', `tr[data-job="${jobId}"]`],
        ['job', `/jobs/${jobId}`, '[data-timeline]'],
        ['runners', '/runners?show=all', 'tr[data-runner]'],
        ['projects', '/projects', `tr[data-row="${project}"]`],
        ['pools', '/pools', `tr[data-row="${pool}"]`],
        ['repos', '/repos', `tr[data-row="${repo}"]`],
        ['audit', '/audit', 'tr[data-action]'],
        ['users', '/users', 'tr[data-user]'],
      ];
      const dark = await newContext(browser, { colorScheme: 'dark' });
      const narrow = await newContext(browser, { viewport: NARROW, colorScheme: 'light' });
      const narrowDark = await newContext(browser, { viewport: NARROW, colorScheme: 'dark' });
      try {
        // Same session cookie in each profile: sign in once, copy it.
        const cookies = await context.cookies();
        for (const c of [dark, narrow, narrowDark]) await c.addCookies(cookies);
        const d = await dark.newPage();
        for (const [name, path, ready] of pages) {
          await visit(d, pacer.base, path);
          await d.locator(ready).first().waitFor();
          await screenshot(d, `${name}-dark`);
        }
        const n = await narrow.newPage();
        const nd = await narrowDark.newPage();
        for (const [name, path, ready] of pages.filter(([name]) => ['home', 'stats', 'jobs', 'job', 'pools'].includes(name))) {
          for (const [p, scheme] of [[n, 'light'], [nd, 'dark']]) {
            await visit(p, pacer.base, path);
            await p.locator(ready).first().waitFor();
            // Nothing wider than the window: tables scroll inside their card.
            const overflow = await p.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
            assert.ok(overflow <= 0, `${path} is ${overflow}px wider than a narrow window`);
            await screenshot(p, `${name}-narrow-${scheme}`);
          }
        }
        // The menu folds away in a narrow window and opens on demand.
        await visit(n, pacer.base, '/jobs');
        assert.equal(await n.getByRole('link', { name: 'Runners' }).isVisible(), false);
        await n.getByRole('button', { name: 'Menu' }).click();
        await n.getByRole('button', { name: 'Change password' }).waitFor();
        await screenshot(n, 'menu-narrow-light');
        await n.getByRole('link', { name: 'Runners' }).click();
        await waitForPath(n, '/runners');
        await screenshot(n, 'runners-narrow-light');
        await d.goto(`${pacer.base}/login`);
        await screenshot(d, 'login-dark');
      } finally {
        await Promise.all([dark.close(), narrow.close(), narrowDark.close()]);
      }
    });
  });

  test('an unknown address shows a page that says so', async () => {
    await onFreshPacer(browser, async ({ pacer, page }) => {
      await page.goto(`${pacer.base}/no/such/page`);
      await page.getByRole('heading', { name: 'Nothing here' }).waitFor();
    });
  });

  test('signing out ends the session; too many wrong passwords are told to wait', async () => {
    await onFreshPacer(browser, async ({ pacer, page }) => {
      await visit(page, pacer.base, '/');
      await page.getByRole('button', { name: 'Sign out' }).click();
      await waitForPath(page, '/login');
      await page.goto(`${pacer.base}/jobs`);
      await waitForPath(page, '/login?next=%2Fjobs');

      // auth.login_rate_limit is 10/5m per address: keep failing until pacer says wait.
      const error = page.locator('[data-login-error]');
      for (let i = 0; i < 30; i++) {
        await signIn(page, BOOTSTRAP_EMAIL, `wrong-${i}`);
        await page.waitForFunction(() => {
          const b = document.querySelector('form button[type="submit"]');
          return b && b.textContent !== 'Signing in…';
        });
        await error.waitFor();
        if (/Too many sign-in attempts/.test(await error.innerText())) break;
      }
      assert.match(await error.innerText(), /Too many sign-in attempts from this address\./);
      assert.match(await error.locator('[data-retry]').innerText(), /You can try again in \d+ seconds/);
      assert.equal(await page.getByRole('button', { name: 'Sign in', exact: true }).isDisabled(), true, 'the button waits out the limit');
      await screenshot(page, 'login-rate-limited');
    });
  });
});
