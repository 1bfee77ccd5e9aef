// How the Self-service page words what the configuration and the API say.

import type { ClaimKind, Placement } from '../../lib/types';

/** `sub matches …`: how a claim rule reads. */
export function ruleVerb(kind: ClaimKind): string {
  switch (kind) {
    case 'exact':
      return 'is';
    case 'prefix':
      return 'starts with';
    case 'regex':
      return 'matches';
  }
}

/** Where runners register: `org octo-org` or `repository octo-org/infra`. */
export function placementText(p: Placement): string {
  return p.scope === 'org' ? `org ${p.org ?? '?'}` : `repository ${p.repo ?? '?'}`;
}

/** An owner's trusted identity: the part before the first ':'. */
export function identityOf(owner: string): string {
  const i = owner.indexOf(':');
  return i < 0 ? owner : owner.slice(0, i);
}

/** `2026-11-01T14:03` (a datetime-local input's value) as RFC 3339, or undefined. */
export function isoOf(local: string): string | undefined {
  if (!local) return undefined;
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
}
