// A small client-side router on the History API. Every page has a real URL
// (pacer serves index.html for any non-/api path), so deep links, reloads
// and the back button work; filters live in the query string.

export interface Location {
  path: string;
  query: URLSearchParams;
}

function read(): Location {
  return { path: window.location.pathname.replace(/\/+$/, '') || '/', query: new URLSearchParams(window.location.search) };
}

export const location = $state<Location>(read());

function sync(): void {
  const next = read();
  location.path = next.path;
  location.query = next.query;
}

window.addEventListener('popstate', sync);

/** Goes to `to` (a path with an optional query). `replace` keeps the history entry (filters, redirects). */
export function navigate(to: string, opts: { replace?: boolean } = {}): void {
  const current = window.location.pathname + window.location.search;
  if (to === current) return;
  if (opts.replace) history.replaceState(null, '', to);
  else history.pushState(null, '', to);
  sync();
  if (!opts.replace) window.scrollTo(0, 0);
}

/** Changes some query parameters of the current page, dropping empty ones. */
export function setQuery(changes: Record<string, string | null | undefined>, opts: { replace?: boolean } = { replace: true }): void {
  const q = new URLSearchParams(window.location.search);
  for (const [k, v] of Object.entries(changes)) {
    if (v === null || v === undefined || v === '') q.delete(k);
    else q.set(k, v);
  }
  const s = q.toString();
  navigate(window.location.pathname + (s ? `?${s}` : ''), opts);
}

/**
 * Lets plain `<a href="/…">` links navigate without a page load: clicks on
 * same-origin links outside /api, with no modifier key or target, are routed.
 */
export function interceptLinks(root: HTMLElement | Document = document): () => void {
  const onClick = (ev: Event) => {
    const e = ev as MouseEvent;
    if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    const a = (e.target as Element | null)?.closest?.('a');
    if (!a || a.target || a.hasAttribute('download') || a.dataset.external !== undefined) return;
    const url = new URL(a.href, window.location.href);
    if (url.origin !== window.location.origin || url.pathname.startsWith('/api/') || url.pathname === '/healthz') return;
    e.preventDefault();
    navigate(url.pathname + url.search);
  };
  root.addEventListener('click', onClick);
  return () => root.removeEventListener('click', onClick);
}

export type Params = Record<string, string>;

/** Matches `/jobs/:id`-style patterns against a path. */
export function match(pattern: string, path: string): Params | null {
  const p = pattern.split('/').filter(Boolean);
  const s = path.split('/').filter(Boolean);
  if (p.length !== s.length) return null;
  const params: Params = {};
  for (let i = 0; i < p.length; i++) {
    if (p[i].startsWith(':')) params[p[i].slice(1)] = decodeURIComponent(s[i]);
    else if (p[i] !== s[i]) return null;
  }
  return params;
}
