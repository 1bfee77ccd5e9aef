// A job pacer gives up on, seen the way an operator would: on Home under
// what needs attention, with its reason, and on the job's own page.
//
// The simulated instance here takes longer to boot than the pool's boot
// timeout (1m, the least a pool allows), so the reaper terminates it at the
// deadline and, with one attempt allowed, fails the job with the reason.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { BOOTSTRAP_EMAIL, launchBrowser, newContext, queuedPayload, screenshot, sendWebhook, startPacer, watchErrors } from './harness.mjs';

/** The boot timeout (60s) plus reaper passes and a loaded machine's slack. */
const FAILURE_TIMEOUT = 180_000;

describe('a job whose runner never boots', () => {
  let pacer;
  let browser;
  let page;
  let errors;
  let jobId;

  before(async () => {
    pacer = await startPacer({ bootDelay: '10m', reaper: { interval: '1s', max_attempts: 1 } });
    browser = await launchBrowser();
    const context = await newContext(browser);
    page = await context.newPage();
    errors = watchErrors(page, pacer.base);
  });

  after(async () => {
    await browser?.close();
    await pacer?.stop();
  });

  test('is failed by the reaper at the boot deadline, and Home lists it with the reason', async () => {
    // Set up through the API, as a script would; the console only watches.
    await page.goto(`${pacer.base}/login`);
    await page.getByLabel('Email').fill(BOOTSTRAP_EMAIL);
    await page.getByLabel('Password').fill(pacer.password);
    await page.getByRole('button', { name: 'Sign in', exact: true }).click();
    await page.waitForURL((u) => u.pathname === '/');
    const call = (method, path, body) =>
      page.evaluate(
        async ([method, path, body]) => {
          const res = await fetch(path, { method, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
          return { status: res.status, body: await res.json() };
        },
        [method, path, body],
      );
    const project = await call('POST', '/api/projects', { name: 'slow' });
    assert.equal(project.status, 201, JSON.stringify(project.body));
    const pool = await call('POST', '/api/pools', {
      project_id: project.body.id,
      name: 'never-boots',
      labels: ['linux'],
      instance_types: ['m7g.large'],
      subnets: ['subnet-0abc1234'],
      ami: 'ami-0123456789abcdef0',
      boot_timeout: '1m',
    });
    assert.equal(pool.status, 201, JSON.stringify(pool.body));
    const binding = await call('POST', '/api/repos', { repo: 'slow/app', project_id: project.body.id });
    assert.equal(binding.status, 201, JSON.stringify(binding.body));

    const sent = await sendWebhook(pacer, 'workflow_job', queuedPayload({ githubJobId: 7_000_001, repo: 'slow/app', labels: ['self-hosted', 'linux'] }));
    assert.equal(sent.status, 202, JSON.stringify(sent.body));
    jobId = sent.body.job_id;

    // Home polls; the failure shows up on its own.
    const failed = page.locator('[data-failed] li').filter({ hasText: 'slow/app' });
    await failed.waitFor({ timeout: FAILURE_TIMEOUT });
    assert.match(await failed.innerText(), /boot timeout|not registered/i);
    await screenshot(page, 'home-attention-failed');
  });

  test("the job's page says pacer gave up, and why", async () => {
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
    assert.deepEqual(errors, []);
  });
});
