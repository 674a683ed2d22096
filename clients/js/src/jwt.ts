/**
 * Reading a JWT's `sub` without verifying it. The client only needs it to name the lock and channel that
 * tabs share, so that two users signed in to one browser (two profiles of an app, an admin impersonating)
 * never share a connection; the server verifies the token on every connection anyway.
 */
export function tokenSubject(token: string): string | undefined {
  const payload = token.split('.')[1];
  if (payload === undefined) return undefined;
  try {
    const base64 = payload.replace(/-/g, '+').replace(/_/g, '/');
    const binary = atob(base64 + '='.repeat((4 - (base64.length % 4)) % 4));
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    const claims: unknown = JSON.parse(new TextDecoder().decode(bytes));
    if (typeof claims === 'object' && claims !== null && 'sub' in claims) {
      const sub = (claims as { sub: unknown }).sub;
      return typeof sub === 'string' && sub !== '' ? sub : undefined;
    }
  } catch {
    // Not a JWT we can read: the caller decides what to do without a subject.
  }
  return undefined;
}
