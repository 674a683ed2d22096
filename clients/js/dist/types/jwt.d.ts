/**
 * Reading a JWT's `sub` without verifying it. The client only needs it to name the lock and channel that
 * tabs share, so that two users signed in to one browser (two profiles of an app, an admin impersonating)
 * never share a connection; the server verifies the token on every connection anyway.
 */
export declare function tokenSubject(token: string): string | undefined;
