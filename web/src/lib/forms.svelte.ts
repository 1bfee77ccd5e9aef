// What forms share: checking before sending, turning a refused save into
// errors beside fields, and saving only what changed.

import { api, ApiError, errorText } from './api';
import type { Errors } from './validate';

/**
 * Splits a failed save into per-field errors (when pacer named a field the
 * form shows) and a general message (anything else).
 */
function saveErrors(e: unknown, fields: string[]): { fields: Errors; general: string | null } {
  if (e instanceof ApiError && e.field && fields.includes(e.field)) {
    return { fields: { [e.field]: e.fieldMessage }, general: null };
  }
  return { fields: {}, general: errorText(e) };
}

/** The keys of `next` whose values differ from `current` (a PATCH sends only these). */
function changed(current: Record<string, unknown>, next: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(next)) {
    if (JSON.stringify(current[k] ?? null) !== JSON.stringify(v ?? null)) out[k] = v;
  }
  return out;
}

/**
 * Creates an object (`POST path`), or, given the one being edited, changes
 * it (`PATCH path/id` with only the fields that differ; nothing is sent when
 * none do).
 */
export async function saveObject(path: string, body: Record<string, unknown>, current: { id: string } | null): Promise<void> {
  if (!current) {
    await api.post(path, body);
    return;
  }
  const patch = changed(current as unknown as Record<string, unknown>, body);
  if (Object.keys(patch).length) await api.patch(`${path}/${current.id}`, patch);
}

/** Moves focus to the first control that has an error, after the DOM shows it. */
function focusFirstError(form: HTMLElement | undefined): void {
  queueMicrotask(() => {
    requestAnimationFrame(() => {
      form?.querySelector<HTMLElement>('[aria-invalid="true"]')?.focus();
    });
  });
}

/**
 * A form's state besides its values: whether its dialog is open and on
 * what, the errors shown beside its fields and above them, and whether a
 * save is under way. `T` is what the form edits; `editing` is null when it
 * creates one.
 */
export class FormState<T = never> {
  shown = $state(false);
  editing = $state<T | null>(null);
  errors = $state<Errors>({});
  general = $state<string | null>(null);
  saving = $state(false);
  /** The fields the form shows: a refusal naming another is shown above them. */
  readonly #fields: string[];

  constructor(fields: string[]) {
    this.#fields = fields;
  }

  /** Opens the dialog afresh, on `editing` or for a new object. */
  open(editing: T | null = null): void {
    this.editing = editing;
    this.errors = {};
    this.general = null;
    this.shown = true;
  }

  close(): void {
    this.shown = false;
  }

  /**
   * Handles the form's submit: `check` it first (nothing is sent while a
   * field is wrong), then `send` it; what pacer refuses goes beside the
   * field it names, or above them. Focus moves to the first field in error.
   */
  async submit(e: SubmitEvent, check: () => Errors, send: () => Promise<void>): Promise<void> {
    e.preventDefault();
    const form = e.currentTarget as HTMLFormElement;
    this.general = null;
    this.errors = check();
    if (Object.keys(this.errors).length) {
      focusFirstError(form);
      return;
    }
    this.saving = true;
    try {
      await send();
    } catch (err) {
      const r = saveErrors(err, this.#fields);
      this.errors = r.fields;
      this.general = r.general;
      focusFirstError(form);
    } finally {
      this.saving = false;
    }
  }
}
