// The web inbox end to end: Debian's headless Chromium (playwright-core) against the real herald binary.
// Tabs of one browser context share Web Locks and BroadcastChannel, as tabs of one browser do.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { after, before, describe, test } from 'node:test';

import { Herald, launch, signIn, waitFor, waitForState } from './harness.mjs';

// Where the screenshots go: a temp dir, or docs/ when refreshing the ones checked in
// (HERALD_SCREENSHOTS=docs scripts/test-browser).
const SHOTS = process.env.HERALD_SCREENSHOTS === 'docs' ? new URL('../../docs/', import.meta.url).pathname : `${tmpdir()}/herald-shots/`;

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/** A fresh server and a fresh browser profile for one test; both gone after it. */
async function fixture(t) {
  const herald = await Herald.start();
  const context = await browser.newContext();
  t.after(async () => {
    await context.close();
    await herald.close();
  });
  return { herald, context };
}

const ids = (page) => page.locator('#notifications li.notification').evaluateAll((items) => items.map((li) => li.dataset.id));
const count = (page) => page.locator('#unread-count').innerText().then((t) => Number(t.trim() || '0'));

async function waitForItem(page, id) {
  await page.locator(`#notifications li.notification[data-id="${id}"]`).waitFor({ timeout: 20_000 });
}

async function waitForCount(page, n) {
  await waitFor(`an unread count of ${n}`, async () => (await count(page)) === n);
}

describe('the web inbox', () => {
  test('two tabs share one connection: a publish shows a toast and the count in both; mark read in one reaches the other', async (t) => {
    const { herald, context } = await fixture(t);
    const token = herald.token('alice');
    const one = await signIn(context, herald, token);
    const two = await signIn(context, herald, token);
    // One socket for the browser, whichever tab holds it.
    await herald.waitForConnections(1);

    const n = await herald.notify('alice', 'A deal for you', '20% off today');
    for (const page of [one, two]) {
      await page.locator(`#toasts .toast[data-id="${n.id}"]`).waitFor();
      assert.match(await page.locator(`#toasts .toast[data-id="${n.id}"]`).innerText(), /A deal for you/);
      await waitForItem(page, n.id);
      await waitForCount(page, 1);
    }
    assert.equal((await herald.health()).connections.total, 1);

    await one.locator(`li.notification[data-id="${n.id}"] button.mark-read`).click();
    for (const page of [one, two]) {
      await page.locator(`li.notification[data-id="${n.id}"]:not(.unread)`).waitFor();
      await waitForCount(page, 0);
    }
  });

  test('closing the leader tab hands the connection over and nothing published meanwhile is lost', async (t) => {
    const { herald, context } = await fixture(t);
    const token = herald.token('alice');
    const first = await signIn(context, herald, token);
    const second = await signIn(context, herald, token);
    await herald.waitForConnections(1);
    // The first tab took the lock first, so it leads; closing it hands the socket to the second.
    const closing = first.close();
    const during = await herald.notify('alice', 'During the handover');
    await closing;
    const afterwards = await herald.notify('alice', 'After the handover');
    await waitForItem(second, during.id);
    await waitForItem(second, afterwards.id);
    await herald.waitForConnections(1);
    const seen = await ids(second);
    assert.equal(new Set(seen).size, seen.length, `no duplicates: ${seen}`);
  });

  test('a stopped server shows reconnecting; after a restart the missed notifications appear once', async (t) => {
    const { herald, context } = await fixture(t);
    const page = await signIn(context, herald, herald.token('alice'));
    const before = await herald.notify('alice', 'Before the restart');
    await waitForItem(page, before.id);

    await herald.stop();
    await waitForState(page, 'reconnecting');
    // While the browser cannot reach it, the server comes back and notifications are published.
    await context.setOffline(true);
    await herald.start();
    const missed = [];
    for (let i = 0; i < 3; i++) missed.push(await herald.notify('alice', `Missed ${i}`));
    await context.setOffline(false);
    for (const n of missed) await waitForItem(page, n.id);
    const seen = await ids(page);
    assert.equal(new Set(seen).size, seen.length, `no duplicates: ${seen}`);
    assert.deepEqual(seen.slice(0, 4), [...missed.map((n) => n.id).reverse(), before.id], 'newest first');
    await waitForCount(page, 4);
  });

  test('with WebSockets blocked the stream brings them, and with the stream blocked too, polling does', async (t) => {
    const { herald, context } = await fixture(t);
    // Every WebSocket this browser opens is refused.
    await context.routeWebSocket(/\/ws/, (ws) => ws.close({ code: 1008, reason: 'blocked by the test' }));
    const page = await signIn(context, herald, herald.token('alice'));
    await page.locator('#connection-state[data-transport="sse"]').waitFor({ state: 'attached', timeout: 30_000 });
    const viaStream = await herald.notify('alice', 'Through the stream');
    await waitForItem(page, viaStream.id);

    await context.route('**/api/v1/stream**', (route) => route.abort());
    // The stream that is open now keeps working; make it end so the client has to reconnect.
    await herald.stop();
    await herald.start();
    await waitForState(page, 'polling', 60_000);
    const viaPolling = await herald.notify('alice', 'Through polling');
    await waitForItem(page, viaPolling.id);
    const seen = await ids(page);
    assert.equal(new Set(seen).size, seen.length, `no duplicates: ${seen}`);
  });

  test('a bad token leads back to the sign-in form with a clear message', async (t) => {
    const { herald, context } = await fixture(t);
    const page = await context.newPage();
    await page.goto(herald.url + '/');
    await page.fill('#token', 'not.a.token');
    await page.locator('#signin button[type="submit"]').click();
    await page.locator('#signin-error').waitFor({ state: 'visible' });
    assert.match(await page.locator('#signin-error').innerText(), /refused|invalid|expired/i);
    assert.equal(await page.locator('#inbox').isVisible(), false);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('herald.token')), null);
    // An expired token too.
    await page.fill('#token', herald.token('alice', -120));
    await page.locator('#signin button[type="submit"]').click();
    await page.locator('#signin-error').waitFor({ state: 'visible' });
    assert.equal(await page.locator('#inbox').isVisible(), false);
  });

  test('keyboard alone marks a notification read', async (t) => {
    const { herald, context } = await fixture(t);
    const n = await herald.notify('alice', 'Keyboard only');
    const page = await signIn(context, herald, herald.token('alice'));
    await waitForItem(page, n.id);
    const button = page.locator(`li.notification[data-id="${n.id}"] button.mark-read`);
    for (let i = 0; i < 40 && !(await button.evaluate((b) => b === document.activeElement)); i++) {
      await page.keyboard.press('Tab');
    }
    assert.ok(await button.evaluate((b) => b === document.activeElement), 'the mark-read button is reachable by Tab');
    await page.keyboard.press('Enter');
    await page.locator(`li.notification[data-id="${n.id}"]:not(.unread)`).waitFor();
    await waitForCount(page, 0);
  });

  test('screenshots at desktop and phone width', async (t) => {
    const { herald, context } = await fixture(t);
    const page = await signIn(context, herald, herald.token('alice'));
    for (const [title, message] of [
      ['Your refund was approved', 'Order #1042: €24.90 back to your card.'],
      ['New deal: 30% off headphones', 'Ends tonight at midnight.'],
      ['Someone commented on your post', '“Great find, thanks!”'],
    ]) {
      const n = await herald.notify('alice', title, message);
      await waitForItem(page, n.id);
    }
    const first = (await ids(page)).at(-1);
    await page.locator(`li.notification[data-id="${first}"] button.mark-read`).click();
    await page.locator(`li.notification[data-id="${first}"]:not(.unread)`).waitFor();
    // A new one as the picture is taken, so that its toast shows.
    const latest = await herald.notify('alice', 'Price drop on your watchlist', 'The espresso machine is now €189.');
    await page.locator(`#toasts .toast[data-id="${latest.id}"]`).waitFor();
    mkdirSync(SHOTS, { recursive: true });
    await page.setViewportSize({ width: 1280, height: 800 });
    await page.screenshot({ path: `${SHOTS}inbox-desktop.png` });
    await page.setViewportSize({ width: 390, height: 844 });
    const scrolls = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
    assert.equal(scrolls, false, 'no horizontal scroll at a phone width');
    await page.screenshot({ path: `${SHOTS}inbox-phone.png` });
  });
});
