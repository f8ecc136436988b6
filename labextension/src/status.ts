/**
 * The status-bar item: each hosted model's state and the queue length, or "host unreachable".
 * Clicking it opens the side panel.
 */
import { Widget } from '@lumino/widgets';

import { IHostState } from './poll';

/** The status item's text for a host state (exported for the panel's header too). */
export function statusText(state: IHostState): string {
  if (state.unreachable) {
    return 'nnsight: host unreachable';
  }
  const view = state.view;
  if (!view) {
    return 'nnsight: connecting';
  }
  const models = Object.entries(view.models);
  if (models.length === 0) {
    return 'nnsight: no models hosted';
  }
  const queued = models.reduce((n, [, m]) => n + m.queued, 0);
  const running = models.reduce((n, [, m]) => n + m.running, 0);
  const parts = models.map(([name, m]) => `${name} ${m.state}`).join(', ');
  return `nnsight: ${parts} | queue ${queued}` + (running ? `, running ${running}` : '');
}

export function overallState(state: IHostState): string {
  if (state.unreachable) {
    return 'unreachable';
  }
  const models = state.view ? Object.values(state.view.models) : [];
  if (!state.view) {
    return 'connecting';
  }
  if (models.some(m => m.state === 'failed')) {
    return 'failed';
  }
  if (models.length && models.every(m => m.state === 'ready')) {
    return 'ready';
  }
  return models.length ? 'loading' : 'none';
}

export class HostStatusItem extends Widget {
  constructor(onClick: () => void) {
    super();
    this.addClass('nnsight-StatusItem');
    this.node.title = 'nnsight model host: click for the panel';
    this.node.addEventListener('click', onClick);
  }

  render(state: IHostState): void {
    this.node.textContent = statusText(state);
    this.node.dataset.state = overallState(state);
    this.node.title = state.unreachable ?? state.view?.message ?? 'nnsight model host: click for the panel';
  }
}
