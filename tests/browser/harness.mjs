// The harness of the browser tests: a real herald binary on an ephemeral port with its own temp dir (stopped,
// restarted on the same port, killed at the end), a publisher and a token minter that speak its API, and
// Debian's Chromium driven by playwright-core. Waits are on conditions with a timeout, never on sleeps.

import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const ROOT = new URL('../..', import.meta.url).pathname;
const BINARY = process.env.HERALD_BIN ?? join(ROOT, 'target/debug/herald');
const CHROMIUM = process.env.HERALD_CHROMIUM ?? '/usr/bin/chromium';

/** A Herald server of this test's own. */
export class Herald {
  constructor() {
    this.dir = mkdtempSync(join(tmpdir(), 'herald-browser-'));
    this.secret = randomBytes(24).toString('hex');
    this.apiKey = randomBytes(24).toString('hex');
    this.listen = '127.0.0.1:0';
    this.child = undefined;
    this.url = undefined;
    this.logs = '';
  }

  static async start() {
    const herald = new Herald();
    await herald.start();
    return herald;
  }

  async start() {
    const env = { ...withoutHerald(process.env), HERALD_JWT_SECRET: this.secret, HERALD_API_KEYS: this.apiKey, HERALD_LOG: 'warn' };
    const child = spawn(BINARY, ['serve', '--listen', this.listen, '--data-dir', join(this.dir, 'data')], { env });
    this.child = child;
    child.stderr.on('data', (d) => (this.logs += d));
    const url = await new Promise((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`herald did not start:\n${out}\n${this.logs}`)), 20_000);
      child.stdout.on('data', (d) => {
        out += d;
        const found = /listening on (http:\/\/[\d.:]+)/.exec(out);
        if (found) {
          clearTimeout(timer);
          resolve(found[1]);
        }
      });
      child.on('exit', (code) => reject(new Error(`herald exited (${code}):\n${out}\n${this.logs}`)));
    });
    this.url = url;
    // A restart comes back on the same port, as a real server behind its address would.
    this.listen = new URL(url).host;
  }

  /** SIGTERM, then wait for the process to end. */
  async stop() {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  }

  async close() {
    if (this.child && this.child.exitCode === null) {
      const exited = new Promise((resolve) => this.child.once('exit', resolve));
      this.child.kill('SIGKILL');
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** An HS256 user token for `user`, valid for `seconds`. */
  token(user, seconds = 3600) {
    const now = Math.floor(Date.now() / 1000);
    const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const body = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ sub: user, iat: now, exp: now + seconds })}`;
    return `${body}.${createHmac('sha256', this.secret).update(body).digest('base64url')}`;
  }

  /** Publishes a notification for `user`; returns the stored one. */
  async notify(user, title, message = `${title}: the message`) {
    const response = await fetch(`${this.url}/api/v1/notifications`, {
      method: 'POST',
      headers: { authorization: `Bearer ${this.apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ user_id: user, type: 'deal', title, message }),
    });
    if (response.status !== 201) throw new Error(`publish answered ${response.status}: ${await response.text()}`);
    return response.json();
  }

  async health() {
    return (await fetch(`${this.url}/health`)).json();
  }

  /** Waits until `/health` counts `total` live connections. */
  async waitForConnections(total) {
    await waitFor(`${total} connection(s) in /health`, async () => (await this.health()).connections.total === total);
  }
}

function withoutHerald(env) {
  return Object.fromEntries(Object.entries(env).filter(([k]) => !k.startsWith('HERALD_')));
}

/** Polls `check` until it is true; fails naming `what` after `timeout` ms. */
export async function waitFor(what, check, timeout = 20_000) {
  const deadline = Date.now() + timeout;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Headless Chromium with the flags this closed network needs. */
export async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
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

/** Opens the inbox in a new tab of `context` and signs in with `token`. */
export async function signIn(context, herald, token) {
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`page error: ${e.message}`));
  await page.goto(herald.url + '/');
  await page.fill('#token', token);
  await page.locator('#signin button[type="submit"]').click();
  await page.locator('#inbox').waitFor({ state: 'visible' });
  await waitForState(page, 'open');
  return page;
}

/** Waits until the page's connection state is `state`. */
export async function waitForState(page, state, timeout = 20_000) {
  await page.locator(`#connection-state[data-state="${state}"]`).waitFor({ state: 'attached', timeout });
}
