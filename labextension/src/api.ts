/**
 * The model host's REST API as the panel uses it (`<base_url>nnsight/api/`, server/panel.py).
 *
 * Requests go through JupyterLab's ServerConnection, so they carry the page's token / XSRF cookie
 * like every other JupyterLab request.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export interface IModelView {
  state: string; // loading | ready | failed | restarting
  error: string | null;
  dtype: string;
  device_map: unknown;
  placement: Record<string, string> | null;
  parameters: number | null;
  source: string;
  queued: number;
  running: number;
}

export interface IQueueEntry {
  model: string;
  status: string;
  position: number | null;
  mine: boolean;
  kind: string;
  job_id: string | null;
}

export interface IJobView {
  job_id: string;
  model: string;
  kind: string;
  status: string;
  position: number | null;
  batch_id: string | null;
  rows: number[] | null;
  created: number;
  started: number | null;
  finished: number | null;
  wall_time: number | null;
  error_type: string | null;
  error_message: string | null;
}

export interface IPanelView {
  user: string;
  time: number;
  message: string | null;
  models: Record<string, IModelView>;
  queue: IQueueEntry[];
  jobs: IJobView[];
}

export interface IModuleNode {
  class: string;
  children: Record<string, IModuleNode>;
  params?: Record<string, number[]>;
}

/** An answer that is not the host's: the server is down, or it runs no model host. */
export class HostUnreachable extends Error {}

async function request(path: string, init: RequestInit = {}): Promise<any> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'nnsight', 'api', path);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new HostUnreachable(`the Jupyter server does not answer (${error})`);
  }
  if (response.status === 404 && path === 'panel') {
    throw new HostUnreachable('this Jupyter server runs no nnsight model host');
  }
  const text = await response.text();
  let body: any = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message = (body && (body.message || body.reason)) || response.statusText;
    if (response.status >= 500 || response.status === 403 || response.status === 401) {
      throw new HostUnreachable(`the host answered ${response.status}: ${message}`);
    }
    throw new Error(`${response.status}: ${message}`);
  }
  return body;
}

export function fetchPanel(): Promise<IPanelView> {
  return request('panel');
}

export async function fetchModuleTree(model: string): Promise<IModuleNode> {
  const body = await request(`models/${encodeURIComponent(model)}/tree`);
  return body.module_tree as IModuleNode;
}

export function cancelJob(jobId: string): Promise<IJobView> {
  return request(`jobs/${encodeURIComponent(jobId)}`, { method: 'DELETE' });
}
