// Who is signed in, and the sign-in methods the server offers. The console
// asks `/api/auth/me` once at start; any later 401 means the session ended
// (expired, signed out elsewhere, user disabled) and sends the user to
// /login, remembering where they were.

import { api, onUnauthorized, request, ApiError } from './api';
import { navigate } from './router.svelte';
import type { AuthInfo, Me } from './types';

interface SessionState {
  /** `undefined` until the first answer; `null` when nobody is signed in. */
  user: Me | null | undefined;
  info: AuthInfo | null;
  /** Set when the first check could not reach pacer at all. */
  unreachable: string | null;
}

export const session = $state<SessionState>({ user: undefined, info: null, unreachable: null });

/** Where the SSO round trip should land: the IdP always returns to `/`. */
const PENDING_KEY = 'pacer.after-login';

export function isAdmin(): boolean {
  return session.user?.role === 'admin';
}

/** Whether the signed-in user has a local password to change (the anonymous admin of `auth.disabled` has none). */
export function hasLocalPassword(): boolean {
  const user = session.user;
  return !!user && 'local_password' in user && user.local_password;
}

/** A safe in-app path to return to after signing in (never another origin, never /login itself). */
export function safeNext(raw: string | null | undefined): string {
  if (!raw || !raw.startsWith('/') || raw.startsWith('//') || raw.startsWith('/api/') || raw.startsWith('/login')) return '/';
  return raw;
}

export function loginPath(next: string = window.location.pathname + window.location.search): string {
  const target = safeNext(next);
  return target === '/' ? '/login' : `/login?next=${encodeURIComponent(target)}`;
}

export async function loadInfo(): Promise<AuthInfo> {
  const info = await api.get<AuthInfo>('/api/auth/info');
  session.info = info;
  return info;
}

export async function loadSession(): Promise<void> {
  try {
    session.user = await request<Me>('GET', '/api/auth/me', undefined, { quiet401: true });
    session.unreachable = null;
    const pending = sessionStorage.getItem(PENDING_KEY);
    if (pending) {
      sessionStorage.removeItem(PENDING_KEY);
      if (window.location.pathname === '/') navigate(safeNext(pending), { replace: true });
    }
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      session.user = null;
      session.unreachable = null;
    } else {
      session.user = null;
      session.unreachable = e instanceof Error ? e.message : String(e);
    }
  }
}

export async function signIn(email: string, password: string): Promise<void> {
  await request('POST', '/api/auth/login', { email, password }, { quiet401: true });
  session.user = await request<Me>('GET', '/api/auth/me', undefined, { quiet401: true });
}

/** Remembers where to go once the IdP sends the browser back to `/`. */
export function rememberForSso(next: string): void {
  sessionStorage.setItem(PENDING_KEY, safeNext(next));
}

export async function signOut(): Promise<void> {
  try {
    await request('POST', '/api/auth/logout', {}, { quiet401: true });
  } catch {
    // Signed out already, or pacer is gone: either way the session is over here.
  }
  session.user = null;
  navigate('/login');
}

onUnauthorized(() => {
  if (session.user === null && window.location.pathname === '/login') return;
  session.user = null;
  navigate(loginPath(), { replace: true });
});
