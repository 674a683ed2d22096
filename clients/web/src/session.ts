/**
 * The signed-in user's token, and the server's development token minting.
 *
 * The token lives in `sessionStorage`: it survives a reload of this tab and is gone when the tab closes, so
 * a token pasted on a shared machine does not outlive the visit.
 */

const TOKEN_KEY = 'herald.token';
const DEV_TOKEN = '/api/v1/dev/token';

export const storedToken = {
  get(): string | null {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch {
      // Storage can be switched off; the page then works until a reload.
      return null;
    }
  },
  set(token: string): void {
    try {
      sessionStorage.setItem(TOKEN_KEY, token);
    } catch {
      // As above: signed in for this page's life only.
    }
  },
  clear(): void {
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // Nothing stored.
    }
  },
};

/**
 * Whether the server mints development tokens: only a server on loopback with generated secrets answers
 * 200 `{"enabled":true}`; any other answer, or none, means the feature is not there.
 */
export async function devTokenEnabled(): Promise<boolean> {
  try {
    const response = await fetch(DEV_TOKEN, { headers: { Accept: 'application/json' }, cache: 'no-store' });
    if (response.status !== 200) return false;
    const body: unknown = await response.json();
    return (body as { enabled?: unknown } | null)?.enabled === true;
  } catch {
    return false;
  }
}

/** Mints a token for `userId`; throws with the server's message when it refuses. */
export async function mintDevToken(userId: string): Promise<string> {
  const response = await fetch(DEV_TOKEN, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify({ user_id: userId }),
    cache: 'no-store',
  });
  let body: unknown = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON: the status line below says what happened.
  }
  const token = (body as { token?: unknown } | null)?.token;
  if (response.ok && typeof token === 'string' && token !== '') return token;
  const message = (body as { error?: { message?: unknown } } | null)?.error?.message;
  throw new Error(typeof message === 'string' ? message : `the server answered ${response.status}`);
}
