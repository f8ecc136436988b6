/**
 * Follows the host: one `GET nnsight/api/panel` per poll, shared by the status item and the panel.
 *
 * Polling, not a push channel: one small request gives everything shown, the host keeps no
 * per-browser state, and the cost is bounded (docs/labextension.md has the measured requests/s).
 * The interval adapts: ACTIVE_MS while a model loads or a job is queued or running, IDLE_MS
 * otherwise, and backs off to UNREACHABLE_MS while the host does not answer; a hidden browser tab
 * polls at HIDDEN_MS. `refresh()` polls at once (after a cancel).
 */
import { ISignal, Signal } from '@lumino/signaling';

import { fetchPanel, HostUnreachable, IPanelView } from './api';

export const ACTIVE_MS = 1000;
export const IDLE_MS = 5000;
export const UNREACHABLE_MS = 5000;
export const HIDDEN_MS = 30000;

/** What the front end knows of the host: its last view, or why it cannot reach it. */
export interface IHostState {
  view: IPanelView | null;
  unreachable: string | null;
  error: string | null;
}

function busy(view: IPanelView): boolean {
  const models = Object.values(view.models);
  return (
    models.some(m => m.state === 'loading' || m.state === 'restarting' || m.queued > 0 || m.running > 0) ||
    view.jobs.some(j => j.status === 'queued' || j.status === 'running')
  );
}

export class HostPoller {
  private _state: IHostState = { view: null, unreachable: null, error: null };
  private _changed = new Signal<this, IHostState>(this);
  private _timer: number | null = null;
  private _disposed = false;
  private _inFlight: Promise<void> | null = null;

  get state(): IHostState {
    return this._state;
  }

  get changed(): ISignal<this, IHostState> {
    return this._changed;
  }

  start(): void {
    document.addEventListener('visibilitychange', this._onVisibility);
    void this.refresh();
  }

  dispose(): void {
    this._disposed = true;
    document.removeEventListener('visibilitychange', this._onVisibility);
    this._clear();
  }

  /** Poll now (and schedule the next poll from here). */
  refresh(): Promise<void> {
    if (this._inFlight) {
      return this._inFlight;
    }
    this._clear();
    this._inFlight = this._poll().finally(() => {
      this._inFlight = null;
      this._schedule();
    });
    return this._inFlight;
  }

  private async _poll(): Promise<void> {
    try {
      const view = await fetchPanel();
      this._state = { view, unreachable: null, error: null };
    } catch (error) {
      if (error instanceof HostUnreachable) {
        this._state = { view: this._state.view, unreachable: error.message, error: null };
      } else {
        this._state = { ...this._state, error: String(error) };
      }
    }
    if (!this._disposed) {
      this._changed.emit(this._state);
    }
  }

  private _delay(): number {
    if (document.hidden) {
      return HIDDEN_MS;
    }
    if (this._state.unreachable) {
      return UNREACHABLE_MS;
    }
    return this._state.view && busy(this._state.view) ? ACTIVE_MS : IDLE_MS;
  }

  private _schedule(): void {
    if (!this._disposed) {
      this._timer = window.setTimeout(() => void this.refresh(), this._delay());
    }
  }

  private _clear(): void {
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
      this._timer = null;
    }
  }

  private _onVisibility = (): void => {
    if (!document.hidden) {
      void this.refresh();
    }
  };
}
