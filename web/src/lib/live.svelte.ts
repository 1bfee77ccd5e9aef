// Data that loads, reloads and polls, with loading and error states a page
// can show without its layout jumping.

import { untrack } from 'svelte';
import { errorText, ApiError } from './api';

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
