// Projects and pools by id, so every page can show names instead of ids.
// Small lists: loaded whole, refreshed when a page changes one of them.

import { listAll } from './api';
import type { Pool, Project } from './types';

export const catalog = $state({
  projects: [] as Project[],
  pools: [] as Pool[],
  loaded: false,
});

let inflight: Promise<void> | null = null;

export function refreshCatalog(): Promise<void> {
  inflight ??= (async () => {
    try {
      const [projects, pools] = await Promise.all([listAll<Project>('/api/projects'), listAll<Pool>('/api/pools')]);
      projects.sort((a, b) => a.name.localeCompare(b.name));
      pools.sort((a, b) => a.name.localeCompare(b.name));
      catalog.projects = projects;
      catalog.pools = pools;
      catalog.loaded = true;
    } finally {
      inflight = null;
    }
  })();
  return inflight;
}

let lastMiss = 0;

/** A name was asked for an id the catalog lacks (made elsewhere since): refresh, at most every few seconds. */
function missed(): void {
  if (!catalog.loaded || Date.now() - lastMiss < 5000) return;
  lastMiss = Date.now();
  queueMicrotask(() => void refreshCatalog().catch(() => {}));
}

export function projectName(id: string | null | undefined): string {
  if (!id) return '—';
  const found = catalog.projects.find((p) => p.id === id);
  if (!found) missed();
  return found?.name ?? id;
}

export function poolName(id: string | null | undefined): string {
  if (!id) return '—';
  const found = catalog.pools.find((p) => p.id === id);
  if (!found) missed();
  return found?.name ?? id;
}
