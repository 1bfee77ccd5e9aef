// The server judges what a form sends: rules the console does not repeat
// (what a label may hold, which repositories an org-scoped project serves)
// come back as pacer's 422 naming the field, and the console shows pacer's
// own words beside that field.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { callApi, fieldError, launchBrowser, onFreshPacer } from './harness.mjs';

/** Resolves with the status of the next `method path` the page sends. */
function nextAnswer(page, method, path) {
  return page
    .waitForResponse((r) => r.request().method() === method && new URL(r.url()).pathname === path)
    .then((r) => r.status());
}

describe("pacer's refusals, beside the field they name", () => {
  let browser;
  before(async () => {
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
  });

  test("a project label pacer refuses is sent, and pacer's reason shows by the label", async () => {
    await onFreshPacer(browser, async ({ pacer, page }) => {
      await page.goto(`${pacer.base}/projects`);
      await page.getByRole('button', { name: 'New project' }).click();
      const dialog = page.getByRole('dialog', { name: 'New project' });
      await dialog.getByLabel('Name').fill('labelled');
      await dialog.getByLabel('Label').fill('gpu,large');
      const answer = nextAnswer(page, 'POST', '/api/projects');
      await dialog.getByRole('button', { name: 'Create project' }).click();
      assert.equal(await answer, 422);
      await fieldError(page, 'project-label').waitFor();
      assert.match(await fieldError(page, 'project-label').innerText(), /contains a comma, a control character or an invisible formatting character/);
    });
  });

  test("a pool label hiding an invisible character is refused by pacer, beside the labels", async () => {
    await onFreshPacer(browser, async ({ pacer, page }) => {
      const made = await callApi(page, 'POST', '/api/projects', { name: 'invisible' });
      assert.equal(made.status, 201, JSON.stringify(made.body));
      await page.goto(`${pacer.base}/pools`);
      await page.getByRole('button', { name: 'New pool' }).click();
      const dialog = page.getByRole('dialog', { name: 'New pool' });
      await dialog.getByLabel('Name').fill('zero-width');
      // Reads as `linux`; a zero-width space sits inside it.
      await dialog.getByLabel('Labels').fill('li\u200bnux');
      await dialog.getByLabel('Instance types').fill('m7g.large');
      await dialog.getByLabel('Subnets').fill('subnet-0abc1234');
      await dialog.getByLabel('AMI').fill('ami-0123456789abcdef0');
      const answer = nextAnswer(page, 'POST', '/api/pools');
      await dialog.getByRole('button', { name: 'Create pool' }).click();
      assert.equal(await answer, 422);
      await fieldError(page, 'pool-labels').waitFor();
      assert.match(await fieldError(page, 'pool-labels').innerText(), /invisible formatting character/);
      // Focus moves on the frame after the error is drawn.
      await page.waitForFunction(() => document.activeElement?.id === 'pool-labels', null, { timeout: 5000 }).catch(() => {});
      assert.equal(await page.evaluate(() => document.activeElement?.id), 'pool-labels', 'focus goes to the refused field');
    });
  });

  test("a repository outside an org-scoped project's org is refused by pacer, beside the repository", async () => {
    await onFreshPacer(browser, async ({ pacer, page }) => {
      const made = await callApi(page, 'POST', '/api/projects', { name: 'acme-org', scope: 'org', org: 'acme' });
      assert.equal(made.status, 201, JSON.stringify(made.body));
      await page.goto(`${pacer.base}/repos?project_id=${made.body.id}`);
      await page.getByRole('button', { name: 'Bind a repository' }).click();
      const dialog = page.getByRole('dialog', { name: 'Bind a repository' });
      await dialog.getByLabel('Repository').fill('other/app');
      const answer = nextAnswer(page, 'POST', '/api/repos');
      await dialog.getByRole('button', { name: 'Bind repository' }).click();
      assert.equal(await answer, 422);
      await fieldError(page, 'repo-name').waitFor();
      assert.match(await fieldError(page, 'repo-name').innerText(), /other\/app is not in org acme, which project acme-org serves/i);
    });
  });
});
