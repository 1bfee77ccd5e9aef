// One way to call pacer's API: same-origin fetch with the session cookie,
// JSON in and out, and every failure turned into an ApiError whose message
// a person can act on.

import type { Page } from './types';

/** A refused or failed request, as pacer's `{"error","message","field"}` body describes it. */
export class ApiError extends Error {
  /** HTTP status; 0 when pacer could not be reached at all. */
  readonly status: number;
  /** pacer's error code: `invalid`, `conflict`, `rate_limited`, … */
  readonly code: string;
  /** The request field the error is about (422 and some 409s). */
  readonly field: string | null;
  /** Seconds to wait, from `Retry-After` (429). */
  readonly retryAfter: number | null;

  constructor(status: number, code: string, message: string, field: string | null = null, retryAfter: number | null = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.field = field;
    this.retryAfter = retryAfter;
  }

  /** The message without the `field: ` prefix pacer puts on 422s, for showing beside the field. */
  get fieldMessage(): string {
    if (this.field && this.message.startsWith(`${this.field}: `)) {
      return this.message.slice(this.field.length + 2);
    }
    return this.message;
  }
}

let unauthorizedHandler: (() => void) | null = null;

/** Called when a request answers 401 (the session ended): the session module sends the user to sign in. */
export function onUnauthorized(handler: () => void): void {
  unauthorizedHandler = handler;
}

type Query = Record<string, string | number | boolean | null | undefined>;

export function withQuery(path: string, query?: Query): string {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined && v !== null && v !== '') params.set(k, String(v));
  }
  const s = params.toString();
  return s ? `${path}?${s}` : path;
}

function explainStatus(status: number): string {
  switch (status) {
    case 401:
      return 'Your session has ended. Sign in again.';
    case 403:
      return 'This needs the admin role. Ask an admin to do it, or to make you one.';
    case 404:
      return 'Not found. It may have been deleted; go back to the list.';
    case 502:
    case 503:
    case 504:
      return 'pacer could not reach something it depends on. Try again in a moment.';
    default:
      return status >= 500
        ? 'Something went wrong inside pacer; the server log has the details. Try again, and tell your admin if it keeps happening.'
        : `pacer answered ${status}.`;
  }
}

function unreachable(): ApiError {
  return new ApiError(0, 'network', 'Cannot reach pacer. Check that it is running and that your network is up, then try again.');
}

/** A refusal: pacer's `{"error","message","field"}` body if it sent one, else what its status means. */
function refusal(res: Response, text: string, quiet401 = false): ApiError {
  let data: unknown = undefined;
  try {
    data = text ? JSON.parse(text) : undefined;
  } catch {
    data = undefined;
  }
  const err = (data ?? {}) as { error?: string; message?: string; field?: string };
  const retry = Number(res.headers.get('retry-after'));
  const apiError = new ApiError(
    res.status,
    err.error ?? `http_${res.status}`,
    err.message ?? explainStatus(res.status),
    err.field ?? null,
    Number.isFinite(retry) && retry > 0 ? retry : null,
  );
  if (res.status === 401 && !quiet401) unauthorizedHandler?.();
  return apiError;
}

export async function request<T>(method: string, path: string, body?: unknown, opts: { quiet401?: boolean } = {}): Promise<T> {
  let res: Response;
  try {
    res = await fetch(path, {
      method,
      credentials: 'same-origin',
      headers: body === undefined ? { accept: 'application/json' } : { accept: 'application/json', 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw unreachable();
  }
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  if (!res.ok) throw refusal(res, text, opts.quiet401);
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new ApiError(res.status, 'not_json', `pacer answered ${path} with something that is not JSON. Is this really pacer's address?`);
  }
}

/** The target of a `Link` header's `rel="next"`, if any. */
export function nextLink(header: string | null): string | null {
  for (const part of header?.split(',') ?? []) {
    const m = /^\s*<([^>]*)>\s*;\s*rel="?next"?\s*$/.exec(part);
    if (m) return m[1];
  }
  return null;
}

/**
 * Every answer of a text report that comes in linked answers (the CSV
 * export), each a whole file with its header line: one file, the header once.
 */
export async function allText(path: string, maxAnswers = 1000): Promise<string> {
  const parts: string[] = [];
  let next: string | null = path;
  while (next && parts.length < maxAnswers) {
    let res: Response;
    try {
      res = await fetch(next, { credentials: 'same-origin' });
    } catch {
      throw unreachable();
    }
    const text = await res.text();
    if (!res.ok) throw refusal(res, text);
    parts.push(parts.length === 0 ? text : text.slice(text.indexOf('\n') + 1));
    next = nextLink(res.headers.get('link'));
  }
  return parts.join('');
}

export const api = {
  get: <T>(path: string, query?: Query) => request<T>('GET', withQuery(path, query)),
  post: <T>(path: string, body?: unknown) => request<T>('POST', path, body ?? {}),
  patch: <T>(path: string, body: unknown) => request<T>('PATCH', path, body),
  del: (path: string) => request<void>('DELETE', path),
};

/** Every item of a list, following cursors (for the small lists: projects, pools, repos, users). */
export async function listAll<T>(path: string, query?: Query): Promise<T[]> {
  const items: T[] = [];
  let cursor: string | null = null;
  for (let i = 0; i < 50; i++) {
    const page: Page<T> = await api.get<Page<T>>(path, { ...query, limit: 500, cursor });
    items.push(...page.items);
    cursor = page.next_cursor;
    if (!cursor) break;
  }
  return items;
}

/** Text for any thrown value. */
export function errorText(e: unknown): string {
  if (e instanceof ApiError) return e.message;
  if (e instanceof Error) return e.message;
  return String(e);
}
