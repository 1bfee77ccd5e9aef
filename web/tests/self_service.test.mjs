// The Self-service page in a real browser against a real pacer with one
// trusted identity: what the configuration trusts, label policies made,
// changed, refused and deleted through the page, security events left by
// refused tokens, and what a viewer and a pacer without self-service show.
// Each test runs against a pacer of its own, so any one runs alone and in
// any order.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  NARROW,
  callApi,
  fieldError,
  freePort,
  launchBrowser,
  newContext,
  onFreshPacer,
  screenshot,
  signIn,
  watchErrors,
} from './harness.mjs';

/** The owner of a workflow of octo-org/infra on main, as the identity names it. */
const OWNER = 'ci:repo:octo-org/infra:ref:refs/heads/main';
const VIEWER = 'viewer@example.com';

/**
 * One trusted identity, `ci`, whose issuer is a loopback port nothing
 * serves: no token can pass, and every one sent is refused and recorded.
 */
async function selfService() {
  const port = await freePort();
  return [
    'self_service:',
    '  enabled: true',
    '  trusted_identities:',
    '    - name: ci',
    `      issuer: "http://127.0.0.1:${port}"`,
    '      audience: pacer-runners',
    '      identity_claim: sub',
    '      claims:',
    '        repository_owner_id: "123456"',
    '        workflow_ref: { prefix: "octo-org/" }',
    '        sub: { regex: "repo:octo-org/[^:]+:ref:refs/heads/main" }',
    '      source_cidrs: [10.0.0.0/8]',
    '      max_token_lifetime: 15m',
    '      runners: { scope: org, org: octo-org, runner_group_id: 3 }',
    '      label_policy:',
    '        allowed_labels: [gpu, linux, "cuda-*"]',
    '        required_labels: [on-prem]',
    '        max_live_runners: 2',
  ];
}

/** Sends `count` requests with a garbage bearer, as a script would; each is refused (401) and recorded as invalid_token. */
async function refuseGarbage(pacer, count) {
  for (let i = 0; i < count; i++) {
    const res = await fetch(`${pacer.base}/api/v1/runners`, { headers: { authorization: `Bearer garbage-${i}` } });
    assert.equal(res.status, 401, `garbage token ${i}`);
    await res.body?.cancel();
  }
}

/** Opens the page and waits for its sections to draw. */
async function visit(page, base, path = '/self-service') {
  await page.goto(base + path);
  await page.locator('[data-page="self-service"]').waitFor();
}

describe('the Self-service page, for admins', () => {
  let browser;

  before(async () => {
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
  });

  test('an admin finds it in the menu: the trusted identity as configured, its security events filtered and paged, no runners yet', async () => {
    await onFreshPacer(
      browser,
      async ({ pacer, page, context }) => {
        // 12 refusals: one page of 10, and 2 on the next.
        await refuseGarbage(pacer, 12);
        await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Self-service', exact: true }).click();
        await page.waitForURL((u) => u.pathname === '/self-service');
        for (const name of ['Trusted identities', 'Label policies', 'Security events', 'Self-service runners']) {
          await page.getByRole('heading', { name, exact: true }).waitFor();
        }

        const ci = page.locator('[data-identity="ci"]');
        await ci.waitFor();
        const card = await ci.innerText();
        assert.match(card, /Issuer\s+http:\/\/127\.0\.0\.1:\d+/);
        assert.match(card, /Audience\s+pacer-runners/);
        assert.match(card, /Owner\s+ci: and the token's sub/);
        assert.match(await ci.locator('[data-claim="repository_owner_id"]').innerText(), /repository_owner_id is 123456/);
        assert.match(await ci.locator('[data-claim="workflow_ref"]').innerText(), /workflow_ref starts with octo-org\//);
        assert.match(await ci.locator('[data-claim="sub"]').innerText(), /sub matches repo:octo-org\/\[\^:\]\+:ref:refs\/heads\/main/);
        assert.match(card, /Addresses\s+10\.0\.0\.0\/8/);
        assert.match(card, /living at most 15m/);
        assert.match(card, /in org octo-org, runner group 3, named ci-…/);
        const policy = await ci.locator('[data-default-policy]').innerText();
        for (const text of ['gpu', 'linux', 'cuda-*', 'always adds on-prem', '2 live runners per owner at most']) {
          assert.ok(policy.includes(text), `the default policy shows ${text}: ${policy}`);
        }

        await page.getByText('No label policies').waitFor();
        await page.getByText('No self-service runners yet').waitFor();

        // The events, newest first, a page at a time.
        const events = page.locator('tr[data-event]');
        await page.waitForFunction(() => document.querySelectorAll('tr[data-event]').length === 10);
        assert.equal(await events.first().getAttribute('data-event'), 'invalid_token');
        assert.match(await events.first().innerText(), /GET \/api\/v1\/runners/);
        assert.match(await events.first().innerText(), /token [0-9a-f]{12}…/);
        await screenshot(page, 'self-service-light');
        const section = page.locator('[data-section="events"]');
        await section.getByRole('button', { name: 'Older' }).click();
        await page.waitForFunction(() => document.querySelectorAll('tr[data-event]').length === 2);
        assert.match(await section.locator('.pager').innerText(), /2 shown · page 2/);
        await section.getByRole('button', { name: 'Newer' }).click();
        await page.waitForFunction(() => document.querySelectorAll('tr[data-event]').length === 10);

        // Filters go into the URL and narrow the table.
        await section.getByLabel('Type').selectOption('replay');
        await section.getByRole('button', { name: 'Filter', exact: true }).click();
        await page.waitForURL((u) => u.search === '?type=replay');
        await page.getByText('No events match these filters').waitFor();
        await section.getByLabel('Type').selectOption('invalid_token');
        await section.getByRole('button', { name: 'Filter', exact: true }).click();
        await page.waitForFunction(() => document.querySelectorAll('tr[data-event="invalid_token"]').length === 10);
        await section.getByLabel('Identity').fill(OWNER);
        await section.getByRole('button', { name: 'Filter', exact: true }).click();
        await page.getByText('No events match these filters').waitFor();
        await section.getByLabel('Identity').fill('');
        await section.getByLabel('Until').fill('2001-01-01T00:00:00');
        await section.getByRole('button', { name: 'Filter', exact: true }).click();
        await page.getByText('No events match these filters').waitFor();
        await section.getByLabel('Until').fill('');
        await section.getByLabel('Since').fill('2001-01-01T00:00:00');
        await section.getByRole('button', { name: 'Filter', exact: true }).click();
        await page.waitForFunction(() => document.querySelectorAll('tr[data-event]').length === 10);
        await screenshot(page, 'self-service-events-filtered');
        await section.getByRole('button', { name: 'Clear filters' }).click();
        await page.waitForURL((u) => u.search === '');

        // The runners' status filter.
        await page.locator('[data-section="self-runners"]').getByLabel('Status').selectOption('active');
        await page.waitForURL((u) => u.search === '?status=active');
        await page.getByText('No active runners').waitFor();

        // Dark and narrow, for review: nothing wider than the window.
        const narrow = await newContext(browser, { viewport: NARROW, colorScheme: 'dark' });
        try {
          await narrow.addCookies(await context.cookies());
          const n = await narrow.newPage();
          await visit(n, pacer.base);
          await n.locator('[data-identity="ci"]').waitFor();
          await n.locator('tr[data-event]').first().waitFor();
          const overflow = await n.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
          assert.ok(overflow <= 0, `the page is ${overflow}px wider than a narrow window`);
          await screenshot(n, 'self-service-narrow-dark');
        } finally {
          await narrow.close();
        }
      },
      { selfService: await selfService() },
    );
  });

  test('a label policy: refused beside the field pacer names, created, listed, edited and deleted', async () => {
    await onFreshPacer(
      browser,
      async ({ pacer, page }) => {
        await visit(page, pacer.base);
        await page.getByText('No label policies').waitFor();
        await page.getByRole('button', { name: 'New label policy' }).click();
        const dialog = page.getByRole('dialog', { name: 'New label policy' });
        await dialog.waitFor();
        const owner = dialog.getByLabel('Owner');
        assert.equal(await owner.inputValue(), 'ci:', 'the one trusted identity is filled in');

        // The shape is checked before anything is sent.
        const sent = [];
        page.on('request', (r) => r.method() === 'POST' && sent.push(r.url()));
        await owner.fill('no-claim-value');
        await dialog.getByRole('button', { name: 'Create policy' }).click();
        await fieldError(page, 'policy-identity').waitFor();
        assert.match(await fieldError(page, 'policy-identity').innerText(), /<trusted identity>:<claim value>/);
        assert.deepEqual(sent, [], 'nothing is sent while a field is wrong');

        // An identity naming no configured trusted identity: pacer's 422, beside the owner.
        await owner.fill('other:someone');
        await dialog.getByLabel('Allowed labels').fill('gpu');
        const refused = page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/api/v1/admin/label-policies');
        await dialog.getByRole('button', { name: 'Create policy' }).click();
        assert.equal((await refused).status(), 422);
        await fieldError(page, 'policy-identity').waitFor();
        assert.match(await fieldError(page, 'policy-identity').innerText(), /naming a configured trusted identity/);
        // The form moves focus once it has rendered the error: wait for it, then say what was found.
        await page.waitForFunction(() => document.activeElement?.id === 'policy-identity', null, { timeout: 5000 }).catch(() => {});
        assert.equal(await page.evaluate(() => document.activeElement?.id), 'policy-identity', 'focus goes to the refused field');
        await screenshot(page, 'self-service-policy-refused-identity');

        // A glob that does not parse: pacer's 422, beside the allowed labels.
        await owner.fill(OWNER);
        await dialog.getByLabel('Allowed labels').fill('gpu, cuda-[');
        await dialog.getByRole('button', { name: 'Create policy' }).click();
        await fieldError(page, 'policy-allowed').waitFor();
        assert.match(await fieldError(page, 'policy-allowed').innerText(), /"cuda-\[" is not a valid glob/);
        assert.equal(await fieldError(page, 'policy-identity').count(), 0, 'the owner is fine now');
        await screenshot(page, 'self-service-policy-refused-glob');

        await dialog.getByLabel('Allowed labels').fill('gpu, cuda-*');
        await dialog.getByLabel('Always added').fill('on-prem');
        await dialog.getByLabel('Live runners at most').fill('3');
        await dialog.getByRole('button', { name: 'Create policy' }).click();
        await dialog.waitFor({ state: 'detached' });
        const row = page.locator(`tr[data-policy="${OWNER}"]`);
        await row.waitFor();
        let text = await row.innerText();
        assert.match(text, /gpu\s+cuda-\*/);
        assert.match(text, /on-prem/);
        assert.equal((await row.locator('[data-max-live]').innerText()).trim(), '3');
        assert.match(text, /by admin@localhost/);

        // Editing: the owner stays; a save replaces the policy.
        await page.getByRole('button', { name: `Edit ${OWNER}` }).click();
        const edit = page.getByRole('dialog', { name: `Edit the label policy of ${OWNER}` });
        assert.equal(await edit.getByLabel('Owner').isDisabled(), true);
        assert.equal(await edit.getByLabel('Allowed labels').inputValue(), 'gpu, cuda-*');
        await edit.getByLabel('Allowed labels').fill('gpu, cuda-*, arm64');
        await edit.getByLabel('Live runners at most').fill('5');
        await edit.getByRole('button', { name: 'Save changes' }).click();
        await edit.waitFor({ state: 'detached' });
        await row.locator('[data-max-live]').filter({ hasText: '5' }).waitFor();
        text = await row.innerText();
        assert.match(text, /arm64/);
        const stored = await callApi(page, 'GET', `/api/v1/admin/label-policies/${encodeURIComponent(OWNER)}`);
        assert.equal(stored.status, 200, JSON.stringify(stored.body));
        assert.deepEqual(stored.body.allowed_labels, ['gpu', 'cuda-*', 'arm64']);
        assert.equal(stored.body.max_live_runners, 5);
        await screenshot(page, 'self-service-policy-listed');

        // Deleting asks first, and says what the owner falls back to.
        await page.getByRole('button', { name: `Delete ${OWNER}` }).click();
        const confirm = page.getByRole('dialog', { name: `Delete the label policy of ${OWNER}?` });
        assert.match(await confirm.innerText(), /falls back to the default policy of trusted identity ci/);
        await screenshot(page, 'self-service-policy-delete');
        await confirm.getByRole('button', { name: 'Keep it' }).click();
        await confirm.waitFor({ state: 'detached' });
        await row.waitFor();
        await page.getByRole('button', { name: `Delete ${OWNER}` }).click();
        await confirm.getByRole('button', { name: 'Delete policy' }).click();
        await confirm.waitFor({ state: 'detached' });
        await page.getByText('No label policies').waitFor();
        const gone = await callApi(page, 'GET', `/api/v1/admin/label-policies/${encodeURIComponent(OWNER)}`);
        assert.equal(gone.status, 404);
      },
      { selfService: await selfService() },
    );
  });

  test('without self-service the page says what to configure', async () => {
    await onFreshPacer(browser, async ({ pacer, page }) => {
      await visit(page, pacer.base);
      const off = page.locator('[data-self-service-off]');
      await off.waitFor();
      assert.match(await off.innerText(), /Self-service is off/);
      assert.match(await off.innerText(), /Set self_service\.enabled in the configuration, with at least one of self_service\.trusted_identities, then restart pacer/);
      await page.getByText('No label policies').waitFor();
      await page.getByText('No refusals recorded').waitFor();
      await screenshot(page, 'self-service-off');
    });
  });

  test('a viewer has no Self-service in the menu, and the page asks nothing of pacer', async () => {
    await onFreshPacer(
      browser,
      async ({ pacer, page: adminPage }) => {
        const made = await callApi(adminPage, 'POST', '/api/users', { email: VIEWER, role: 'viewer' });
        assert.equal(made.status, 201, JSON.stringify(made.body));
        const context = await newContext(browser);
        try {
          const page = await context.newPage();
          const errors = watchErrors(page, pacer.base);
          const asked = [];
          page.on('request', (r) => new URL(r.url()).pathname.startsWith('/api/v1/') && asked.push(r.url()));
          await page.goto(`${pacer.base}/login`);
          await signIn(page, VIEWER, made.body.password);
          await page.waitForURL((u) => u.pathname === '/');
          const nav = page.getByRole('navigation', { name: 'Main' });
          await nav.getByRole('link', { name: 'Jobs', exact: true }).waitFor();
          assert.equal(await nav.getByRole('link', { name: 'Self-service' }).count(), 0);

          await visit(page, pacer.base);
          await page.getByText('This page is for admins.').waitFor();
          assert.equal(await page.getByRole('button', { name: 'New label policy' }).count(), 0);
          assert.equal(await page.locator('[data-section]').count(), 0);
          assert.deepEqual(asked, [], 'no self-service API is asked for');
          await screenshot(page, 'self-service-viewer');
          assert.deepEqual(errors, []);
        } finally {
          await context.close();
        }
      },
      { selfService: await selfService() },
    );
  });
});
