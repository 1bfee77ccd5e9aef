// Data that loads, reloads and polls, with loading and error states a page
// can show without its layout jumping.

import { untrack } from 'svelte';
import { errorText, ApiError } from './api';
import type { Page } from './types';

/** A clock that ticks once a second, so "3m ago" and running timers move. */
export const clock = $state({ now: new Date() });
setInterval(() => {
  clock.now = new Date();
}, 1000);

export class Loader<T> {
  data = $state<T | undefined>(undefined);
  error = $state<string | null>(null);
  /** The HTTP status of the last failure (403 means "not for your role"). */
  status = $state<number | null>(null);
  /** True only while the first load (or a load after a change of inputs) is under way. */
  loading = $state(true);
  #seq = 0;
  #fn: () => Promise<T>;

  constructor(fn: () => Promise<T>) {
    this.#fn = fn;
  }

  /**
   * Loads again. `quiet` keeps what is shown while a poll refreshes it;
   * otherwise the page shows its loading state (inputs changed).
   */
  async load(quiet = false): Promise<void> {
    const seq = ++this.#seq;
    if (!quiet) this.loading = true;
    try {
      const data = await this.#fn();
      if (seq !== this.#seq) return;
      this.data = data;
      this.error = null;
      this.status = null;
    } catch (e) {
      if (seq !== this.#seq) return;
      this.error = errorText(e);
      this.status = e instanceof ApiError ? e.status : null;
    } finally {
      if (seq === this.#seq) this.loading = false;
    }
  }

  /**
   * Loads now, and again whenever something `inputs` reads changes (a
   * filter in the URL). Call during component set-up.
   */
  loadOn(inputs: () => unknown): void {
    $effect(() => {
      inputs();
      this.load();
    });
  }
}

/**
 * One page of a long list (jobs, runners, the audit log), newest first,
 * walked with the API's cursors. The page is one of the loader's inputs:
 * `older()` and `newer()` load another, `first()` starts over when a filter
 * changes.
 */
export class PagedLoader<T> extends Loader<Page<T>> {
  /** The cursors that led to each page after the first. */
  #cursors = $state<string[]>([]);
  /** The cursor of the page shown; null for the newest. */
  readonly cursor = $derived(this.#cursors.at(-1) ?? null);

  constructor(fetchPage: (cursor: string | null) => Promise<Page<T>>) {
    super(() => fetchPage(this.cursor));
  }

  /** 1 for the newest page. */
  get page(): number {
    return this.#cursors.length + 1;
  }

  older(): void {
    const next = this.data?.next_cursor;
    if (next) this.#cursors = [...this.#cursors, next];
  }

  newer(): void {
    this.#cursors = this.#cursors.slice(0, -1);
  }

  first(): void {
    this.#cursors = [];
  }

  override loadOn(inputs: () => unknown): void {
    super.loadOn(() => [inputs(), this.cursor]);
  }
}

/**
 * Calls `fn` every `ms` while the component lives and the tab is visible,
 * and once more as soon as the tab is shown again. Call during component
 * set-up.
 */
export function poll(fn: () => unknown, ms: number): void {
  $effect(() => {
    const tick = () => {
      if (!document.hidden) untrack(fn);
    };
    const timer = setInterval(tick, ms);
    const onVisible = () => {
      if (!document.hidden) untrack(fn);
    };
    document.addEventListener('visibilitychange', onVisible);
    return () => {
      clearInterval(timer);
      document.removeEventListener('visibilitychange', onVisible);
    };
  });
}
