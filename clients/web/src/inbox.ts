/**
 * Herald's inbox page: the entry point. It switches between the sign-in form and the signed-in view
 * (`InboxView`), and owns the one `HeraldClient` of a sign-in: created with the token, closed at sign-out
 * or when the server refuses the token.
 *
 * Element ids and classes here and in index.html are the end-to-end tests' hooks: keep them.
 */

import { createClient, type HeraldClient } from '../../js/src/index.js';
import { byId, describe } from './dom.js';
import { InboxView } from './inbox-view.js';
import { devTokenEnabled, mintDevToken, storedToken } from './session.js';

declare global {
  interface Window {
    /** For debugging and end-to-end tests: the signed-in client. */
    heraldInbox?: { client: HeraldClient };
  }
}

const REFUSED = 'That token was refused: it is invalid or has expired. Paste a new one.';

interface SignIn {
  client: HeraldClient;
  view: InboxView;
}

class Page {
  private readonly signinView = byId('signin-view', HTMLElement);
  private readonly form = byId('signin', HTMLFormElement);
  private readonly token = byId('token', HTMLInputElement);
  private readonly submit = byId('signin-submit', HTMLButtonElement);
  private readonly error = byId('signin-error', HTMLParagraphElement);
  private readonly devRow = byId('dev-token', HTMLFieldSetElement);
  private readonly devUser = byId('dev-user', HTMLInputElement);
  private readonly devMint = byId('dev-mint', HTMLButtonElement);
  private readonly signOutButton = byId('sign-out', HTMLButtonElement);
  private current: SignIn | undefined;
  /** A sign-in from the form waits here until its first page is in, so a bad token never shows the inbox. */
  private pending = false;

  start(): void {
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submitToken();
    });
    this.devMint.addEventListener('click', () => void this.mint());
    this.devUser.addEventListener('keydown', (event) => {
      // Enter here means "mint", not the form's own submit (which signs in with the token field).
      if (event.key !== 'Enter') return;
      event.preventDefault();
      void this.mint();
    });
    this.signOutButton.addEventListener('click', () => {
      this.signOut();
      this.token.focus();
    });
    void devTokenEnabled().then((enabled) => {
      this.devRow.hidden = !enabled;
      this.devRow.disabled = !enabled;
    });

    const token = storedToken.get();
    if (token !== null && token !== '') {
      this.signIn(token, false);
    } else {
      this.showSignIn();
      this.token.focus();
    }
  }

  private submitToken(): void {
    if (this.pending) return;
    // A token copied together with its header still works.
    const token = this.token.value.trim().replace(/^Bearer\s+/i, '');
    if (token === '') {
      this.showError('Paste a token to sign in.', this.token);
      this.token.focus();
      return;
    }
    this.signIn(token, true);
  }

  private async mint(): Promise<void> {
    if (this.pending) return;
    const user = this.devUser.value.trim();
    if (user === '') {
      this.showError('Enter the user id to mint a token for.', this.devUser);
      this.devUser.focus();
      return;
    }
    this.setPending(true, 'mint');
    try {
      const token = await mintDevToken(user);
      this.setPending(false);
      this.signIn(token, true);
    } catch (error) {
      this.setPending(false);
      this.showError(`No token could be minted: ${describe(error)}`);
    }
  }

  /**
   * Starts a client for `token`. From the form, the form stays until the first page answers (a refused
   * token returns to it at once); after a reload, with a token stored, the inbox shows straight away.
   */
  private signIn(token: string, fromForm: boolean): void {
    this.signOut();
    storedToken.set(token);
    const client = createClient({ url: location.origin, getToken: () => storedToken.get() ?? token });
    const signIn: SignIn = {
      client,
      view: new InboxView(client, {
        refused: () => {
          if (this.current !== signIn) return;
          this.signOut();
          this.showError(REFUSED, this.token);
          this.token.focus();
        },
        loaded: () => {
          if (this.current !== signIn || !this.pending) return;
          this.setPending(false);
          this.showInbox(signIn.view, true);
        },
      }),
    };
    this.current = signIn;
    window.heraldInbox = { client };
    if (fromForm) this.setPending(true, 'sign-in');
    else this.showInbox(signIn.view, false);
  }

  private signOut(): void {
    const signIn = this.current;
    this.current = undefined;
    this.setPending(false);
    if (signIn !== undefined) {
      signIn.view.dispose();
      signIn.client.close();
    }
    delete window.heraldInbox;
    storedToken.clear();
    this.showSignIn();
  }

  private showSignIn(): void {
    this.token.value = '';
    this.showError(undefined);
    this.signinView.hidden = false;
  }

  private showInbox(view: InboxView, focus: boolean): void {
    this.showError(undefined);
    this.token.value = '';
    this.signinView.hidden = true;
    view.show();
    if (focus) view.focus();
  }

  /** Shows (or, with `undefined`, clears) the form's message; `field` is the input it is about. */
  private showError(message: string | undefined, field?: HTMLInputElement): void {
    this.error.textContent = message ?? '';
    this.error.hidden = message === undefined;
    for (const input of [this.token, this.devUser]) {
      if (input === field) input.setAttribute('aria-invalid', 'true');
      else input.removeAttribute('aria-invalid');
    }
  }

  /** While a sign-in or a mint is under way: the buttons say so, and a second press does nothing. */
  private setPending(pending: boolean, what?: 'sign-in' | 'mint'): void {
    this.pending = pending;
    this.submit.textContent = pending && what === 'sign-in' ? 'Signing in…' : 'Sign in';
    this.devMint.textContent = pending && what === 'mint' ? 'Minting…' : 'Mint';
    for (const button of [this.submit, this.devMint]) button.setAttribute('aria-disabled', String(pending));
    this.form.setAttribute('aria-busy', String(pending));
  }
}

new Page().start();
