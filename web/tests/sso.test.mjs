// Single sign-on in a real browser: pacer with auth.oidc.* pointing at the
// OpenID Provider the Rust SSO tests use (npm oidc-provider on loopback).
// The login page offers "Sign in with <issuer host>", the round trip through
// the provider's own login and consent pages ends signed in, back on the
// page that was asked for.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { freePort, launchBrowser, newContext, screenshot, startOidcProvider, startPacer, watchErrors } from './harness.mjs';

describe('the console with OIDC single sign-on', () => {
  let idp;
  let pacer;
  let browser;
  const account = { sub: 'ada', email: 'ada@example.com', email_verified: true };

  before(async () => {
    // pacer's port must be known before the provider registers its redirect URI.
    const port = await freePort();
    idp = await startOidcProvider({ redirectUri: `http://127.0.0.1:${port}/api/auth/oidc/callback`, account });
    pacer = await startPacer({ oidc: idp, port });
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await pacer?.stop();
    await idp?.stop();
  });

  test('the login page shows the SSO button named after the issuer host, and no password form', async () => {
    const context = await newContext(browser);
    const page = await context.newPage();
    try {
      await page.goto(`${pacer.base}/login`);
      const sso = page.getByRole('link', { name: 'Sign in with 127.0.0.1' });
      await sso.waitFor();
      assert.equal(await sso.getAttribute('href'), '/api/auth/oidc/start');
      assert.equal(await page.getByLabel('Password').count(), 0, 'local login is off while SSO is on');
      await screenshot(page, 'login-sso-light');
    } finally {
      await context.close();
    }
  });

  test('signing in through the IdP lands on the deep link that was asked for', async () => {
    const context = await newContext(browser);
    const page = await context.newPage();
    const errors = watchErrors(page, pacer.base);
    try {
      await page.goto(`${pacer.base}/runners?show=all`);
      await page.waitForURL((u) => u.pathname === '/login' && u.searchParams.get('next') === '/runners?show=all');
      await page.getByRole('link', { name: 'Sign in with 127.0.0.1' }).click();

      // The provider's own pages: log in as the account, then consent, until it sends us back.
      const idpOrigin = new URL(idp.issuer).origin;
      for (let step = 0; step < 6; step++) {
        await page.waitForLoadState('domcontentloaded');
        if (new URL(page.url()).origin !== idpOrigin) break;
        const login = page.locator('input[name="login"]');
        if (await login.count()) {
          await login.fill(account.sub);
          await page.locator('input[name="password"]').fill('any');
        }
        await Promise.all([page.waitForNavigation(), page.locator('button[type="submit"]').first().click()]);
      }

      await page.waitForURL((u) => u.origin === pacer.base && u.pathname === '/runners' && u.search === '?show=all');
      await page.locator('[data-page="runners"]').waitFor();
      // The first user ever is an admin; the header names them.
      assert.equal(await page.locator('.who .email').innerText(), account.email);
      assert.equal(await page.locator('[data-role]').innerText(), 'admin');
      await screenshot(page, 'sso-signed-in');
      assert.deepEqual(errors, []);
    } finally {
      await context.close();
    }
  });
});
