// Monthly budgets in a real browser against a real pacer: a reaper pass a
// second counts each budget's spend, a budget of one micro-dollar enforced on
// pool acme/linux is spent by the first job, and the second job stays queued
// with the reason on its page. The Home page must show each budget as
// `GET /api/budgets` has it.
//
//   PACER_BIN=…/debug/pacer node --test tests/budgets.test.mjs

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  callApi,
  consoleFormat,
  launchBrowser,
  newContext,
  queuedPayload,
  screenshot,
  sendWebhook,
  signInAsAdmin,
  startPacer,
  watchErrors,
} from './harness.mjs';

/** Long enough for a loaded 2-core machine; nothing here measures time. */
const TIMEOUT = 120_000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const BUDGETS = [
  { name: 'linux-cap', pool: 'acme/linux', monthly_usd: 0.000001, warn_percent: 50, enforce: true },
  { name: 'acme-watch', project: 'acme', monthly_usd: 100 },
  { name: 'gone', project: 'nobody', monthly_usd: 5 },
];

/** Polls `read` until `done(value)`; the last value. */
async function until(what, read, done) {
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    assert.ok(Date.now() < deadline, `${what} did not happen in time: ${JSON.stringify(value)}`);
    await sleep(500);
  }
}

describe('budgets, against pacer serve with a reaper pass a second', () => {
  let browser;
  let pacer;
  let context;
  let page;
  let errors;
  let fmt;
  let heldJob;

  before(async () => {
    browser = await launchBrowser();
    fmt = await consoleFormat();
    pacer = await startPacer({ budgets: BUDGETS, reaper: { interval: '1s' }, jobTime: '2s' });
    context = await newContext(browser);
    page = await context.newPage();
    errors = watchErrors(page, pacer.base);
    await signInAsAdmin(page, pacer);
    const project = await callApi(page, 'POST', '/api/projects', { name: 'acme' });
    assert.equal(project.status, 201, JSON.stringify(project.body));
    const pool = await callApi(page, 'POST', '/api/pools', {
      project_id: project.body.id,
      name: 'linux',
      labels: ['linux'],
      instance_types: ['m7i.large'],
      subnets: ['subnet-0abc1234'],
      ami: 'ami-0123456789abcdef0',
      market: 'on-demand',
    });
    assert.equal(pool.status, 201, JSON.stringify(pool.body));
    const bound = await callApi(page, 'POST', '/api/repos', { repo: 'acme/app', project_id: project.body.id });
    assert.equal(bound.status, 201, JSON.stringify(bound.body));
  });

  after(async () => {
    await context?.close();
    await pacer?.stop();
    await browser?.close();
  });

  async function deliver(githubJobId) {
    const sent = await sendWebhook(pacer, 'workflow_job', queuedPayload({ githubJobId, repo: 'acme/app', labels: ['self-hosted', 'linux'] }));
    assert.equal(sent.status, 202, JSON.stringify(sent.body));
    return sent.body.job_id;
  }

  const budgets = async () => (await callApi(page, 'GET', '/api/budgets')).body;
  const named = (list, name) => list.budgets.find((b) => b.name === name);

  /** Home's budget rows against the API's, as the console formats them. */
  async function assertHomeShows(list) {
    await page.goto(`${pacer.base}/`);
    await page.locator('[data-budgets]').waitFor();
    assert.equal(await page.locator('#budgets-h').textContent(), `Budgets for ${list.month}`);
    for (const b of list.budgets) {
      const row = page.locator(`[data-budget="${b.name}"]`);
      assert.equal(await row.getAttribute('data-status'), b.status, b.name);
      assert.equal((await row.locator('[data-spent]').innerText()).trim(), `${fmt.money(b.spent_micro_usd)} of ${fmt.money(b.monthly_micro_usd)}`);
      assert.equal(await row.getByRole('meter').getAttribute('aria-valuenow'), String(b.spent_micro_usd));
    }
  }

  test('before any job, every budget is on track and one that names nothing says so', async () => {
    const list = await until('a first count', budgets, (l) => l.budgets.every((b) => b.counted_at || !b.found));
    assert.deepEqual(
      list.budgets.map((b) => [b.name, b.status, b.found]),
      [
        ['linux-cap', 'ok', true],
        ['acme-watch', 'ok', true],
        ['gone', 'ok', false],
      ],
    );
    await assertHomeShows(list);
    assert.match(await page.locator('[data-budget="gone"]').innerText(), /no project of that name/);
    assert.equal(await page.locator('[data-spent-budgets]').count(), 0, 'nothing is spent yet');
  });

  test('the first job spends the enforced budget, which then holds the next job with its reason', async () => {
    const first = await deliver(6_100_001);
    await until('the first job settled', async () => (await callApi(page, 'GET', `/api/jobs/${first}`)).body, (j) => j?.state === 'completed' && j.usage);
    const list = await until('linux-cap held', budgets, (l) => named(l, 'linux-cap').status === 'held');
    assert.ok(named(list, 'linux-cap').spent_micro_usd >= 1);
    assert.equal(named(list, 'acme-watch').status, 'ok', 'a hundred dollars is far off');

    heldJob = await deliver(6_100_002);
    const job = await until(
      'the second job told why it waits',
      async () => (await callApi(page, 'GET', `/api/jobs/${heldJob}`)).body,
      (j) => j?.transitions.at(-1)?.note?.startsWith('held by budget linux-cap'),
    );
    assert.equal(job.state, 'queued');
    assert.equal(job.runner_id, null, 'no runner was launched for it');

    await page.goto(`${pacer.base}/jobs/${heldJob}`);
    const notice = page.locator('[data-waiting]');
    await notice.waitFor();
    assert.match(await notice.innerText(), /held by budget linux-cap: .*pool acme\/linux.*enforce is on/);
    await screenshot(page, 'job-held-by-budget-light');
  });

  test('Home shows the spent budget, and the audit log and the log say so once', async () => {
    const list = await budgets();
    await assertHomeShows(list);
    const spent = page.locator('[data-spent-budgets]');
    await spent.waitFor();
    assert.match(await spent.innerText(), /linux-cap \(pool acme\/linux\).*launches held/);
    await screenshot(page, 'home-budgets-light');

    // A few more passes change nothing.
    await sleep(3000);
    const audit = (await callApi(page, 'GET', '/api/audit?action=budget.exceeded')).body;
    assert.deepEqual(
      audit.items.map((e) => e.target),
      ['linux-cap'],
    );
    assert.equal(audit.items[0].detail.enforce, true);
    const warned = (await callApi(page, 'GET', '/api/audit?action=budget.warning')).body;
    assert.deepEqual(warned.items.map((e) => e.target), ['linux-cap']);
    const lines = pacer.log().split('\n').filter((l) => l.includes('budget exceeded'));
    assert.equal(lines.length, 1, `one log line: ${lines.join('\n')}`);
    assert.match(lines[0], /linux-cap/);

    const still = (await callApi(page, 'GET', `/api/jobs/${heldJob}`)).body;
    assert.equal(still.state, 'queued', 'the held job was not launched by a later pass');

    const dark = await newContext(browser, { colorScheme: 'dark' });
    try {
      const darkPage = await dark.newPage();
      await darkPage.context().addCookies(await context.cookies());
      await darkPage.goto(`${pacer.base}/`);
      await darkPage.locator('[data-budgets]').waitFor();
      await screenshot(darkPage, 'home-budgets-dark');
    } finally {
      await dark.close();
    }
    assert.deepEqual(errors, [], 'the page logged no script errors');
  });
});
