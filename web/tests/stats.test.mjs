// The Stats page in a real browser against a real pacer whose simulated
// fleet runs jobs for two repositories, three senders and three pools (one
// of them on an instance type without a price). The page must show what the
// API answers for the very requests it made: the tests watch those
// requests, ask pacer the same, and compare every figure as the console
// formats it (web/src/lib/format.ts).
//
//   PACER_BIN=…/debug/pacer node --test tests/stats.test.mjs
//
// Screenshots land in web/test-results/ for review.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';

import {
  NARROW,
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
const JOB_TIMEOUT = 120_000;
const DAY_MS = 86_400_000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** USD per hour; `c7i.large` is left without a price, so its minutes are unpriced. */
const PRICES = { 'm7i.large': 0.1008, 'm7g.large': 0.0816 };

const POOLS = [
  { name: 'linux-x64', labels: ['linux', 'x64'], instance_types: ['m7i.large'] },
  { name: 'linux-arm64', labels: ['linux', 'arm64'], instance_types: ['m7g.large'] },
  { name: 'linux-big', labels: ['linux', 'big'], instance_types: ['c7i.large'] },
];

/** Who sends which job, where, and on which pool (by its last label). */
const JOBS = [
  { sender: 'alice', repo: 'acme/app', label: 'x64' },
  { sender: 'alice', repo: 'acme/app', label: 'arm64' },
  { sender: 'bob', repo: 'acme/lib', label: 'x64' },
  { sender: 'bob', repo: 'acme/lib', label: 'big' },
  { sender: 'carol', repo: 'acme/app', label: 'x64' },
];

/** Project `acme`, its three pools and its two repositories, through the API. */
async function setUpFleet(page) {
  const project = await callApi(page, 'POST', '/api/projects', { name: 'acme' });
  assert.equal(project.status, 201, JSON.stringify(project.body));
  for (const pool of POOLS) {
    const made = await callApi(page, 'POST', '/api/pools', {
      project_id: project.body.id,
      ...pool,
      subnets: ['subnet-0abc1234'],
      ami: 'ami-0123456789abcdef0',
      market: 'on-demand',
    });
    assert.equal(made.status, 201, JSON.stringify(made.body));
  }
  for (const repo of new Set(JOBS.map((j) => j.repo))) {
    const bound = await callApi(page, 'POST', '/api/repos', { repo, project_id: project.body.id });
    assert.equal(bound.status, 201, JSON.stringify(bound.body));
  }
}

/** Sends every job of JOBS and waits until each is completed and settled; their ids. */
async function runJobs(pacer, page) {
  const base = 5_200_000 + Math.floor(Math.random() * 100_000) * 10;
  const ids = [];
  for (const [i, job] of JOBS.entries()) {
    const payload = queuedPayload({ githubJobId: base + i, repo: job.repo, labels: ['self-hosted', 'linux', job.label], sender: job.sender });
    const sent = await sendWebhook(pacer, 'workflow_job', payload);
    assert.equal(sent.status, 202, JSON.stringify(sent.body));
    ids.push(sent.body.job_id);
  }
  const deadline = Date.now() + JOB_TIMEOUT;
  for (const id of ids) {
    for (;;) {
      const job = (await callApi(page, 'GET', `/api/jobs/${id}`)).body;
      if (job?.state === 'completed' && job.usage) break;
      assert.ok(Date.now() < deadline, `job ${id} was not completed and settled in time: ${JSON.stringify(job)}`);
      await sleep(500);
    }
  }
  // Settled jobs are in the roll-ups the reports read.
  for (;;) {
    const stats = await callApi(page, 'GET', '/api/stats?group_by=pool');
    if (stats.body?.total?.jobs === ids.length) break;
    assert.ok(Date.now() < deadline, `the roll-ups never counted ${ids.length} jobs: ${JSON.stringify(stats.body?.total)}`);
    await sleep(500);
  }
  return ids;
}

/** Which report a request to /api/stats… is. */
function kindOf(url) {
  const path = url.pathname;
  if (path === '/api/stats') return `stats-${url.searchParams.get('group_by')}`;
  return path.slice('/api/stats/'.length);
}

const REPORTS = ['stats-pool', 'stats-repo', 'top-users', 'series'];

/** Records the page's report requests from now on, by kind (the latest of each). */
function recordReports(page) {
  const seen = new Map();
  const onRequest = (req) => {
    const url = new URL(req.url());
    if (url.pathname.startsWith('/api/stats')) seen.set(kindOf(url), url);
  };
  page.on('request', onRequest);
  return {
    clear: () => seen.clear(),
    stop: () => page.off('request', onRequest),
    /** Waits for one request of every report; they must share one window. */
    async all() {
      const deadline = Date.now() + 20_000;
      while (!REPORTS.every((k) => seen.has(k))) {
        assert.ok(Date.now() < deadline, `the page asked only for ${[...seen.keys()].join(', ')}`);
        await sleep(50);
      }
      const urls = Object.fromEntries(REPORTS.map((k) => [k, seen.get(k)]));
      const from = urls['stats-pool'].searchParams.get('from');
      const to = urls['stats-pool'].searchParams.get('to');
      for (const k of REPORTS) {
        assert.equal(urls[k].searchParams.get('from'), from, `${k} asks for the same start`);
        assert.equal(urls[k].searchParams.get('to'), to, `${k} asks for the same end`);
      }
      return { urls, from, to };
    },
  };
}

/** Asks pacer, with the page's session, what the page asked it. */
async function answers(page, urls) {
  const out = {};
  for (const [kind, url] of Object.entries(urls)) {
    const res = await callApi(page, 'GET', url.pathname + url.search);
    assert.equal(res.status, 200, `${kind}: ${JSON.stringify(res.body)}`);
    out[kind] = res.body;
  }
  return out;
}

/** A table's header texts and its body rows' (`data-row` or `data-start`, cell texts). */
function readTable(page, selector) {
  return page.$eval(selector, (table) => ({
    head: [...table.querySelectorAll('thead th')].map((th) => th.textContent.trim()),
    rows: [...table.querySelectorAll('tbody tr')].map((tr) => ({
      key: tr.dataset.row ?? tr.dataset.start,
      cells: [...tr.children].map((c) => c.textContent.trim()),
    })),
  }));
}

const text = async (page, selector) => (await page.locator(selector).innerText()).trim();

/** The costliest first, as the page orders pools and repositories. */
const byCost = (groups) => [...groups].sort((a, b) => b.cost.total_micro_usd - a.cost.total_micro_usd);

/** Waits until the page has drawn the figures of its window (tables and charts). */
async function drawn(page) {
  await page.locator('[data-table="pools"] tbody tr').first().waitFor();
  for (const chart of ['cost-by-pool', 'cost-split', 'queue-wait']) {
    await page.locator(`[data-chart="${chart}"] canvas[data-ink]:not([data-ink=""])`).waitFor({ state: 'attached' });
  }
}

describe('the Stats page, against pacer serve with jobs settled', () => {
  let browser;
  let pacer;
  let context;
  let page;
  let errors;
  let fmt;
  let jobIds;

  before(async () => {
    browser = await launchBrowser();
    fmt = await consoleFormat();
    pacer = await startPacer({ prices: PRICES, jobTime: '3s' });
    context = await newContext(browser);
    page = await context.newPage();
    errors = watchErrors(page, pacer.base);
    await signInAsAdmin(page, pacer);
    await setUpFleet(page);
    jobIds = await runJobs(pacer, page);
  });

  after(async () => {
    await context?.close();
    await pacer?.stop();
    await browser?.close();
  });

  /** Every figure on the page against the API's answers to the page's own requests. */
  async function assertFiguresMatch(reports) {
    const api = await answers(page, reports.urls);
    const total = api['stats-pool'].total;

    // The tiles.
    assert.equal(total.jobs, jobIds.length, 'pacer counted every job the test ran');
    assert.equal(await text(page, '[data-total="jobs"] .tile-value'), String(total.jobs));
    assert.equal(await text(page, '[data-total="succeeded"]'), String(total.succeeded));
    assert.equal(await text(page, '[data-total="failed"]'), String(total.failed));
    assert.equal(await text(page, '[data-total="runner-minutes"] .tile-value'), fmt.minutes(total.runner_minutes));
    assert.ok(total.unpriced_minutes > 0, 'the pool without a price left unpriced minutes');
    assert.equal(await text(page, '[data-total="unpriced-minutes"]'), `${fmt.minutes(total.unpriced_minutes)} without a price, not in the cost`);
    assert.ok(total.cost.total_micro_usd > 0, 'the priced pools cost something');
    assert.equal(await text(page, '[data-total="cost"] .tile-value'), fmt.money(total.cost.total_micro_usd));
    assert.equal(await text(page, '[data-total="cost-job"]'), fmt.money(total.cost.job_micro_usd));
    assert.equal(await text(page, '[data-total="cost-overhead"]'), fmt.money(total.cost.overhead_micro_usd));
    assert.equal(await text(page, '[data-total="cost-idle"]'), fmt.money(total.cost.idle_micro_usd));
    assert.equal(await text(page, '[data-total="queue-p50"] .tile-value'), fmt.millis(total.queued_to_in_progress.p50_ms));
    assert.equal(await text(page, '[data-total="queue-p95"]'), fmt.millis(total.queued_to_in_progress.p95_ms));
    assert.equal(await text(page, '[data-total="queue-p99"]'), fmt.millis(total.queued_to_in_progress.p99_ms));

    // By pool: every pool, costliest first.
    const pools = await readTable(page, '[data-table="pools"]');
    assert.deepEqual(
      pools.rows,
      byCost(api['stats-pool'].buckets).map((b) => ({
        key: b.key,
        cells: [
          b.name,
          String(b.jobs),
          String(b.failed),
          fmt.minutes(b.runner_minutes),
          b.unpriced_minutes > 0 ? fmt.minutes(b.unpriced_minutes) : '—',
          fmt.millis(b.queued_to_in_progress.p50_ms),
          fmt.millis(b.queued_to_in_progress.p95_ms),
          fmt.money(b.cost.job_micro_usd),
          fmt.money(b.cost.overhead_micro_usd),
          fmt.money(b.cost.idle_micro_usd),
          fmt.money(b.cost.total_micro_usd),
        ],
      })),
    );
    assert.deepEqual(pools.rows.map((r) => r.cells[0]).sort(), POOLS.map((p) => p.name).sort());
    const unpriced = api['stats-pool'].buckets.find((b) => b.name === 'linux-big');
    assert.equal(unpriced.unpriced_minutes, unpriced.runner_minutes, 'c7i.large has no price');
    assert.equal(unpriced.cost.total_micro_usd, 0);

    // Top repositories: the ten costliest of group_by=repo (ties in any order).
    const repoRow = (b) => ({ key: b.key, cells: [b.key, String(b.jobs), String(b.failed), fmt.minutes(b.runner_minutes), fmt.money(b.cost.total_micro_usd)] });
    const repos = await readTable(page, '[data-table="repos"]');
    const expected = byCost(api['stats-repo'].buckets).slice(0, 10);
    const order = (rows) => [...rows].sort((a, b) => a.key.localeCompare(b.key));
    assert.deepEqual(order(repos.rows), order(expected.map(repoRow)));
    const shownCosts = repos.rows.map((r) => api['stats-repo'].buckets.find((b) => b.key === r.key).cost.total_micro_usd);
    assert.deepEqual(shownCosts, [...shownCosts].sort((a, b) => b - a), 'repositories are shown costliest first');
    assert.deepEqual(repos.rows.map((r) => r.key).sort(), ['acme/app', 'acme/lib']);

    // Top users, in pacer's order.
    const users = await readTable(page, '[data-table="users"]');
    assert.deepEqual(
      users.rows,
      api['top-users'].users.map((u) => ({ key: u.sender, cells: [u.sender, String(u.jobs), fmt.minutes(u.runner_minutes), fmt.money(u.cost_micro_usd)] })),
    );
    assert.deepEqual(users.rows.map((r) => r.key).sort(), ['alice', 'bob', 'carol']);

    // The charts' tables: a row per step of the series, every figure as pacer has it.
    const series = api.series;
    const points = series.points;
    assert.equal(series.step, reports.urls.series.searchParams.get('step'));
    const sumOf = (f) => points.reduce((s, p) => s + f(p), 0);
    assert.equal(sumOf((p) => p.total.cost.total_micro_usd), total.cost.total_micro_usd, 'the charts hold the same money as the tiles');
    const heading = series.step === 'hour' ? 'Hour' : 'Day (UTC)';
    const chartTable = (id) => readTable(page, `[data-chart="${id}"] table`);

    const byPool = await chartTable('cost-by-pool');
    assert.deepEqual(byPool.head, [heading, ...series.series.map((k) => k.name), 'Total']);
    assert.deepEqual(
      byPool.rows.map((r) => ({ key: r.key, cells: r.cells.slice(1) })),
      points.map((p) => ({
        key: p.start,
        cells: [...series.series.map((k) => (k.key in p.by ? fmt.money(p.by[k.key]) : '—')), fmt.money(p.total.cost.total_micro_usd)],
      })),
    );

    const split = await chartTable('cost-split');
    assert.deepEqual(split.head, [heading, 'Job', 'Overhead', 'Idle', 'Total']);
    assert.deepEqual(
      split.rows.map((r) => ({ key: r.key, cells: r.cells.slice(1) })),
      points.map((p) => ({
        key: p.start,
        cells: [p.total.cost.job_micro_usd, p.total.cost.overhead_micro_usd, p.total.cost.idle_micro_usd, p.total.cost.total_micro_usd].map(fmt.money),
      })),
    );

    const waits = await chartTable('queue-wait');
    assert.deepEqual(waits.head, [heading, 'p50', 'p95', 'p99']);
    assert.deepEqual(
      waits.rows.map((r) => ({ key: r.key, cells: r.cells.slice(1) })),
      points.map((p) => {
        const w = p.total.queued_to_in_progress;
        return { key: p.start, cells: [w.p50_ms, w.p95_ms, w.p99_ms].map(fmt.millis) };
      }),
    );
    assert.ok(points.some((p) => p.total.queued_to_in_progress.p95_ms !== null), 'some step has a queue wait to draw');
  }

  test('the figures shown are the API’s: totals, by pool, top repositories, top users and every chart’s table', async () => {
    const reports = recordReports(page);
    try {
      // From Home, through the menu, as a person would.
      await page.goto(`${pacer.base}/`);
      await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Stats', exact: true }).click();
      await page.waitForURL((u) => u.pathname === '/stats');
      await drawn(page);
      const week = await reports.all();
      assert.equal(Date.parse(week.to) - Date.parse(week.from), 7 * DAY_MS, 'with no range in the URL the page shows the last 7 days');
      assert.equal(week.urls.series.searchParams.get('step'), 'day');
      assert.equal(week.urls.series.searchParams.get('split_by'), 'pool');
      assert.equal(week.urls['top-users'].searchParams.get('limit'), '10');
      assert.equal(await page.getByRole('button', { name: '7 d', exact: true }).getAttribute('aria-pressed'), 'true');
      await assertFiguresMatch(week);
      await screenshot(page, 'stats-light');

      // Hour by hour over the last day: the same figures, 25 or so steps.
      reports.clear();
      await page.goto(`${pacer.base}/stats?range=24h`);
      await drawn(page);
      const day = await reports.all();
      assert.equal(day.urls.series.searchParams.get('step'), 'hour');
      await assertFiguresMatch(day);
      await page.locator('[data-chart] details').evaluateAll((all) => all.forEach((d) => (d.open = true)));
      await screenshot(page, 'stats-tables-light');
    } finally {
      reports.stop();
    }
    assert.deepEqual(errors, [], 'the page logged no script errors');
  });

  test('a preset puts its range in the URL and in every request; a custom range too', async () => {
    const reports = recordReports(page);
    try {
      await page.goto(`${pacer.base}/stats`);
      await drawn(page);

      reports.clear();
      const before = Date.now();
      await page.getByRole('button', { name: '24 h', exact: true }).click();
      await page.waitForURL((u) => u.pathname + u.search === '/stats?range=24h');
      let r = await reports.all();
      assert.equal(Date.parse(r.to) - Date.parse(r.from), DAY_MS);
      assert.ok(Date.parse(r.to) >= before - 1000, 'a preset ends now');
      assert.equal(r.urls.series.searchParams.get('step'), 'hour');
      assert.equal(await page.getByRole('button', { name: '24 h', exact: true }).getAttribute('aria-pressed'), 'true');

      reports.clear();
      await page.getByRole('button', { name: 'This month', exact: true }).click();
      await page.waitForURL((u) => u.search === '?range=month');
      r = await reports.all();
      const to = new Date(r.to);
      assert.equal(r.from, new Date(Date.UTC(to.getUTCFullYear(), to.getUTCMonth(), 1)).toISOString().replace('.000Z', 'Z'));

      reports.clear();
      await page.getByRole('button', { name: '30 d', exact: true }).click();
      await page.waitForURL((u) => u.search === '?range=30d');
      r = await reports.all();
      assert.equal(Date.parse(r.to) - Date.parse(r.from), 30 * DAY_MS);
      assert.equal(r.urls.series.searchParams.get('step'), 'day');

      // A link reproduces the view.
      reports.clear();
      await page.goto(`${pacer.base}/stats?range=24h`);
      r = await reports.all();
      assert.equal(Date.parse(r.to) - Date.parse(r.from), DAY_MS);

      // A custom range: the browser's time zone is UTC, so the inputs are UTC too.
      const now = new Date();
      const start = new Date(now.getTime() - 3 * 3600_000);
      const end = new Date(now.getTime() + 3600_000);
      const local = (d) => d.toISOString().slice(0, 16);
      const minute = (d) => `${local(d)}:00Z`;
      reports.clear();
      await page.getByLabel('From', { exact: true }).fill(local(start));
      await page.getByLabel('To', { exact: true }).fill(local(end));
      await page.getByRole('button', { name: 'Apply' }).click();
      await page.waitForURL((u) => u.searchParams.get('from') === minute(start) && u.searchParams.get('to') === minute(end) && !u.searchParams.has('range'));
      r = await reports.all();
      assert.equal(r.from, minute(start));
      assert.equal(r.to, minute(end));
      assert.equal(r.urls.series.searchParams.get('step'), 'hour');
      await drawn(page);
      assert.equal(await text(page, '[data-total="jobs"] .tile-value'), String(jobIds.length));
      assert.equal(await page.locator('.presets [aria-pressed="true"]').count(), 0, 'no preset is pressed for a custom range');
      await screenshot(page, 'stats-custom-light');
    } finally {
      reports.stop();
    }
    assert.deepEqual(errors, [], 'the page logged no script errors');
  });

  test('the CSV link carries the range, and its file has a row per job, fetched answer by answer', async () => {
    const reports = recordReports(page);
    try {
      await page.goto(`${pacer.base}/stats?range=24h`);
      await drawn(page);
      const r = await reports.all();
      const link = page.getByRole('link', { name: 'Download CSV' });
      const href = new URL(await link.getAttribute('href'), pacer.base);
      assert.equal(href.pathname, '/api/stats/export');
      assert.equal(href.searchParams.get('from'), r.from);
      assert.equal(href.searchParams.get('to'), r.to);
      assert.equal(href.searchParams.get('format'), 'csv');

      // Two jobs an answer, so the range's five come in three linked answers, which the page
      // must fetch in turn and save as one file with one header.
      const asked = [];
      await page.route('**/api/stats/export?*', (route) => {
        const url = new URL(route.request().url());
        if (!url.searchParams.has('limit')) url.searchParams.set('limit', '2');
        asked.push(url);
        return route.continue({ url: url.toString() });
      });
      const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
      await page.unroute('**/api/stats/export?*');
      assert.equal(asked.length, Math.ceil(jobIds.length / 2), `one request per answer: ${asked.join(' ')}`);
      assert.ok(asked.slice(1).every((u) => u.searchParams.get('cursor')), 'the later ones follow the Link header');
      const lines = readFileSync(await download.path(), 'utf8').split('\n').filter((l) => l !== '');
      const header = lines[0].split(',');
      assert.equal(header[0], 'job_id');
      assert.ok(header.includes('total_usd'), lines[0]);
      assert.deepEqual(
        lines.slice(1).map((l) => l.split(',')[0]).sort(),
        [...jobIds].sort(),
        'one row per job of the range',
      );
      // The page stayed where it was: a download is no navigation.
      assert.equal(new URL(page.url()).pathname, '/stats');
    } finally {
      reports.stop();
    }
  });

  test('a range where nothing ran shows the empty state; a backwards one says why', async () => {
    await page.goto(`${pacer.base}/stats?from=2020-01-01T00:00:00Z&to=2020-01-08T00:00:00Z`);
    await page.locator('[data-empty]').filter({ hasText: 'Nothing ran in this range' }).waitFor();
    assert.equal(await text(page, '[data-total="jobs"] .tile-value'), '0');
    assert.equal(await page.locator('[data-chart]').count(), 0, 'no empty charts');
    assert.equal(await page.locator('[data-table="pools"]').count(), 0, 'no empty tables');
    assert.equal(await page.getByLabel('From', { exact: true }).inputValue(), '2020-01-01T00:00');
    await screenshot(page, 'stats-empty-light');

    await page.goto(`${pacer.base}/stats?from=2020-02-01T00:00:00Z&to=2020-01-01T00:00:00Z`);
    assert.match(await text(page, '[data-range-error]'), /ends before it starts/);
    assert.equal(await page.getByRole('link', { name: 'Download CSV' }).count(), 0);
    assert.deepEqual(errors, [], 'the page logged no script errors');
  });

  test('when pacer cannot answer, the page says so, and Try again recovers', async () => {
    const p = await context.newPage();
    try {
      let refused = 0;
      const byPool = (url) => url.pathname === '/api/stats' && url.searchParams.get('group_by') === 'pool';
      await p.route(byPool, (route) => {
        refused++;
        return route.fulfill({ status: 503, contentType: 'application/json', body: '{"error":"unavailable","message":"pacer is restarting."}' });
      });
      await p.goto(`${pacer.base}/stats`);
      await p.getByRole('alert').filter({ hasText: 'Figures are unavailable: pacer is restarting.' }).waitFor();
      assert.ok(refused > 0);
      await p.unroute(byPool);
      await p.getByRole('button', { name: 'Try again' }).click();
      await drawn(p);
      assert.equal(await text(p, '[data-total="jobs"] .tile-value'), String(jobIds.length));
    } finally {
      await p.close();
    }
  });

  test('charts are drawn again in the other colour scheme; light, dark and narrow screenshots', async () => {
    const inks = () => page.locator('[data-chart] canvas').evaluateAll((cs) => cs.map((c) => c.dataset.ink));
    const textColour = () => page.evaluate(() => getComputedStyle(document.documentElement).getPropertyValue('--text').trim());
    await page.emulateMedia({ colorScheme: 'light' });
    await page.goto(`${pacer.base}/stats?range=24h`);
    await drawn(page);
    const light = await textColour();
    assert.deepEqual(await inks(), [light, light, light]);

    await page.emulateMedia({ colorScheme: 'dark' });
    const dark = await textColour();
    assert.notEqual(dark, light);
    await page.waitForFunction(
      (want) => [...document.querySelectorAll('[data-chart] canvas')].every((c) => c.dataset.ink === want),
      dark,
    );
    await screenshot(page, 'stats-dark');
    await page.locator('[data-chart] details').evaluateAll((all) => all.forEach((d) => (d.open = true)));
    await screenshot(page, 'stats-tables-dark');
    await page.emulateMedia({ colorScheme: 'light' });

    const narrow = await newContext(browser, { viewport: NARROW, colorScheme: 'dark' });
    try {
      await narrow.addCookies(await context.cookies());
      const n = await narrow.newPage();
      await n.goto(`${pacer.base}/stats?range=24h`);
      await drawn(n);
      // Nothing wider than the window: tables scroll inside their card.
      const overflow = await n.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
      assert.ok(overflow <= 0, `/stats is ${overflow}px wider than a narrow window`);
      await screenshot(n, 'stats-narrow-dark');
    } finally {
      await narrow.close();
    }
    assert.deepEqual(errors, [], 'the page logged no script errors');
  });
});
