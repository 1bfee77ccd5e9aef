// Jobs pacer gives up on, seen the way an operator would: on Home under
// what needs attention, with its reason, and on the job's own page.
//
// In the first, the simulated instance takes longer to boot than the pool's
// boot timeout (1m, the least a pool allows), so the reaper terminates it at
// the deadline and, with one attempt allowed, fails the job with the reason.
// In the second, every simulated bootstrap fails and reports its log tail,
// as the runner's bootstrap script does; after two attempts the job fails
// and its page shows the last runner's tail.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { callApi, launchBrowser, onFreshPacer, queuedPayload, screenshot, sendWebhook } from './harness.mjs';

/** The boot timeout (60s) plus reaper passes and a loaded machine's slack. */
const FAILURE_TIMEOUT = 180_000;

/** Makes a project, a pool and a repo binding through the API, as a
 * script would: the console only watches. */
async function setUp(page, { project, pool, repo, bootTimeout }) {
  const made = await callApi(page, 'POST', '/api/projects', { name: project });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  const pooled = await callApi(page, 'POST', '/api/pools', {
    project_id: made.body.id,
    name: pool,
    labels: ['linux'],
    instance_types: ['m7g.large'],
    subnets: ['subnet-0abc1234'],
    ami: 'ami-0123456789abcdef0',
    boot_timeout: bootTimeout,
  });
  assert.equal(pooled.status, 201, JSON.stringify(pooled.body));
  const binding = await callApi(page, 'POST', '/api/repos', { repo, project_id: made.body.id });
  assert.equal(binding.status, 201, JSON.stringify(binding.body));
}

describe('pacer gives up on a job', () => {
  let browser;
  before(async () => {
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
  });

  test("whose runner never boots: the reaper fails it at the boot deadline, Home lists it with the reason, and the job's page says pacer gave up, and why", async () => {
    const options = { bootDelay: '10m', reaper: { interval: '1s', max_attempts: 1 } };
    await onFreshPacer(
      browser,
      async ({ pacer, page }) => {
        await setUp(page, { project: 'slow', pool: 'never-boots', repo: 'slow/app', bootTimeout: '1m' });

        const sent = await sendWebhook(pacer, 'workflow_job', queuedPayload({ githubJobId: 7_000_001, repo: 'slow/app', labels: ['self-hosted', 'linux'] }));
        assert.equal(sent.status, 202, JSON.stringify(sent.body));
        const jobId = sent.body.job_id;

        // Home polls; the failure shows up on its own.
        const failed = page.locator('[data-failed] li').filter({ hasText: 'slow/app' });
        await failed.waitFor({ timeout: FAILURE_TIMEOUT });
        assert.match(await failed.innerText(), /boot timeout|not registered/i);
        await screenshot(page, 'home-attention-failed');

        await page.locator('[data-failed] li a').first().click();
        await page.waitForURL((u) => u.pathname === `/jobs/${jobId}`);
        const notice = page.locator('[data-failure]');
        await notice.waitFor();
        assert.match(await notice.innerText(), /gave up launching a runner/);
        assert.match(await notice.innerText(), /boot timeout|not registered/i);
        await page.locator('[data-timeline] tr[data-step="failed"]').waitFor();
        // The runner's own record says why it was ended.
        const tail = page.locator('[data-error-tail]');
        assert.match(await tail.innerText(), /Why the runner ended[\s\S]*boot timeout/);
        // Names, not ids, for what was made after the page loaded.
        await page.locator('dl.facts').first().filter({ hasText: 'never-boots' }).waitFor();
        await screenshot(page, 'job-failed');
      },
      options,
    );
  });

  test("whose runners fail their bootstrap: it fails after two attempts, and the job's page shows the last runner's log tail", async () => {
    const options = { bootDelay: '1s', bootstrapFailurePercent: 100, reaper: { max_attempts: 2 } };
    await onFreshPacer(
      browser,
      async ({ pacer, page }) => {
        await setUp(page, { project: 'broken', pool: 'bad-image', repo: 'broken/app', bootTimeout: '5m' });
        const sent = await sendWebhook(pacer, 'workflow_job', queuedPayload({ githubJobId: 7_000_002, repo: 'broken/app', labels: ['self-hosted', 'linux'] }));
        assert.equal(sent.status, 202, JSON.stringify(sent.body));

        // No reaper is involved: each failed runner reports itself.
        const failed = page.locator('[data-failed] li').filter({ hasText: 'broken/app' });
        await failed.waitFor({ timeout: FAILURE_TIMEOUT });
        assert.match(await failed.innerText(), /after 2 attempts/);

        await page.goto(`${pacer.base}/jobs/${sent.body.job_id}`);
        const notice = page.locator('[data-failure]');
        await notice.waitFor();
        assert.match(await notice.innerText(), /simulated bootstrap failure/);
        const tail = page.locator('[data-error-tail]');
        await tail.waitFor();
        assert.match(await tail.locator('h2').innerText(), /Bootstrap error/);
        const lines = await tail.locator('pre').innerText();
        assert.match(lines, /bootstrapping against http:\/\/127\.0\.0\.1:\d+/);
        assert.match(lines, /FAILED: simulated bootstrap failure/);
        // The timeline says who gave the job back: the failed runner's own report.
        const givenBack = page.locator('[data-timeline] tr', { hasText: 'ended before running a job' });
        assert.match(await givenBack.innerText(), /runner callback/);
        await screenshot(page, 'job-bootstrap-failed');

        // Both runners are on the Runners page, each marked as failed at bootstrap.
        await page.goto(`${pacer.base}/runners?show=all`);
        await page.locator('tr', { hasText: 'bootstrap failed' }).nth(1).waitFor();
      },
      options,
    );
  });
});
