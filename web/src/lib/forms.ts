// What forms share: turning a refused save into errors beside fields.

import { ApiError, errorText } from './api';
import type { Errors } from './validate';

/**
 * Splits a failed save into per-field errors (when pacer named a field the
 * form shows) and a general message (anything else).
 */
export function saveErrors(e: unknown, fields: string[]): { fields: Errors; general: string | null } {
  if (e instanceof ApiError && e.field && fields.includes(e.field)) {
    return { fields: { [e.field]: e.fieldMessage }, general: null };
  }
  return { fields: {}, general: errorText(e) };
}

/** The keys of `next` whose values differ from `current` (a PATCH sends only these). */
export function changed(current: Record<string, unknown>, next: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(next)) {
    if (JSON.stringify(current[k] ?? null) !== JSON.stringify(v ?? null)) out[k] = v;
  }
  return out;
}

/** Moves focus to the first control that has an error, after the DOM shows it. */
export function focusFirstError(form: HTMLElement | undefined): void {
  queueMicrotask(() => {
    requestAnimationFrame(() => {
      form?.querySelector<HTMLElement>('[aria-invalid="true"]')?.focus();
    });
  });
}
