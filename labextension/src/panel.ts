/**
 * The side panel: hosted models (state, dtype, placement, parameters, the module tree with each
 * path copyable), the queue, and your jobs (status, batch id, rows, wall time) with cancel.
 *
 * Plain DOM, rebuilt per poll, except each model's module tree: it is fetched once, when first
 * expanded, and kept across polls (it does not change while the model is loaded).
 */
import { Clipboard } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { cancelJob, fetchModuleTree, IJobView, IModuleNode, IPanelView, IQueueEntry } from './api';
import { HostPoller, IHostState } from './poll';
import { overallState, statusText } from './status';

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

export function formatCount(n: number | null): string {
  if (n === null || n === undefined) {
    return '?';
  }
  if (n >= 1e9) {
    return `${(n / 1e9).toFixed(2)}B`;
  }
  if (n >= 1e6) {
    return `${(n / 1e6).toFixed(1)}M`;
  }
  if (n >= 1e3) {
    return `${(n / 1e3).toFixed(1)}k`;
  }
  return String(n);
}

function placementText(placement: Record<string, string> | null): string {
  if (!placement) {
    return '?';
  }
  const devices = Array.from(new Set(Object.values(placement)));
  return devices.length === 1 ? devices[0] : `${devices.join(', ')} (${Object.keys(placement).length} parts)`;
}

function wallText(job: IJobView): string {
  return job.wall_time === null ? '' : `${job.wall_time.toFixed(1)} s`;
}

function section(title: string): HTMLElement {
  const node = el('section', 'nnsight-Section');
  node.appendChild(el('h3', 'nnsight-SectionTitle', title));
  return node;
}

export class HostPanel extends Widget {
  private _trees = new Map<string, HTMLElement>();
  private _header = el('div', 'nnsight-Header');
  private _models = section('Hosted models');
  private _queue = section('Queue');
  private _jobs = section('Your jobs');
  private _modelsKey = '';
  private _jobsKey = '';

  constructor(private _poller: HostPoller) {
    super();
    this.id = 'nnsight-panel';
    this.addClass('nnsight-Panel');
    this.title.caption = 'nnsight model host';
    this.node.append(this._header, this._models, this._queue, this._jobs);
    this.node.tabIndex = 0;
  }

  render(state: IHostState): void {
    this._header.textContent = statusText(state);
    this._header.dataset.state = overallState(state);
    if (state.unreachable) {
      this._header.appendChild(el('div', 'nnsight-Unreachable', state.unreachable));
    }
    if (state.error) {
      this._header.appendChild(el('div', 'nnsight-Error', state.error));
    }
    const view = state.view;
    if (view && view.message) {
      this._header.appendChild(el('div', 'nnsight-Message', view.message));
    }
    this.node.classList.toggle('nnsight-mod-stale', Boolean(state.unreachable));
    if (view) {
      this._renderModels(view);
      this._renderQueue(view.queue);
      this._renderJobs(view.jobs);
    }
  }

  // ---------------------------------------------------------------- models

  private _renderModels(view: IPanelView): void {
    const key = JSON.stringify(view.models);
    if (key === this._modelsKey) {
      return;
    }
    this._modelsKey = key;
    this._clear(this._models);
    const names = Object.keys(view.models);
    if (!names.length) {
      this._models.appendChild(el('div', 'nnsight-Empty', 'no models hosted (c.NNsightHost.models)'));
    }
    for (const name of names) {
      const m = view.models[name];
      const card = el('div', 'nnsight-Model');
      card.dataset.model = name;
      card.dataset.state = m.state;
      const head = el('div', 'nnsight-ModelHead');
      head.append(el('span', 'nnsight-ModelName', name), el('span', `nnsight-State nnsight-State-${m.state}`, m.state));
      card.appendChild(head);
      const facts = el('div', 'nnsight-ModelFacts');
      facts.textContent =
        `${m.dtype} | ${placementText(m.placement)} | ${formatCount(m.parameters)} parameters` +
        ` | queued ${m.queued}, running ${m.running}`;
      card.appendChild(facts);
      if (m.error) {
        card.appendChild(el('div', 'nnsight-Error', m.error));
      }
      if (m.state === 'ready') {
        card.appendChild(this._treeFor(name));
      }
      this._models.appendChild(card);
    }
  }

  private _treeFor(model: string): HTMLElement {
    const kept = this._trees.get(model);
    if (kept) {
      return kept;
    }
    const details = el('details', 'nnsight-Tree');
    details.appendChild(el('summary', 'nnsight-TreeSummary', 'Module tree'));
    let loaded = false;
    details.addEventListener('toggle', () => {
      if (!details.open || loaded) {
        return;
      }
      loaded = true;
      const body = el('div', 'nnsight-TreeBody', 'loading the module tree...');
      details.appendChild(body);
      fetchModuleTree(model)
        .then(tree => {
          body.textContent = '';
          body.appendChild(this._treeNode('model', tree, []));
        })
        .catch(error => {
          loaded = false;
          body.textContent = `could not load the module tree: ${error}`;
        });
    });
    this._trees.set(model, details);
    return details;
  }

  private _treeNode(label: string, node: IModuleNode, path: string[]): HTMLElement {
    const children = Object.entries(node.children || {});
    const code = path.reduce(
      (text, part) => (/^\d+$/.test(part) ? `${text}[${part}]` : `${text}.${part}`),
      'model'
    );
    const row = el('span', 'nnsight-TreeRow');
    row.append(el('span', 'nnsight-TreeLabel', label), el('span', 'nnsight-TreeClass', node.class));
    const copy = el('button', 'nnsight-Copy jp-Button', 'copy');
    copy.title = `copy ${code}`;
    copy.dataset.path = code;
    copy.addEventListener('click', event => {
      event.preventDefault();
      event.stopPropagation();
      Clipboard.copyToSystem(code);
      copy.textContent = 'copied';
      window.setTimeout(() => (copy.textContent = 'copy'), 1500);
    });
    row.appendChild(copy);
    if (!children.length) {
      const leaf = el('div', 'nnsight-TreeLeaf');
      leaf.dataset.path = code;
      leaf.appendChild(row);
      return leaf;
    }
    const details = el('details', 'nnsight-TreeNode');
    details.dataset.path = code;
    const summary = el('summary', 'nnsight-TreeNodeSummary');
    summary.appendChild(row);
    details.appendChild(summary);
    // Children are built on first open: a 30-layer model has hundreds of modules.
    details.addEventListener(
      'toggle',
      () => {
        for (const [name, child] of children) {
          details.appendChild(this._treeNode(name, child, [...path, name]));
        }
      },
      { once: true }
    );
    details.open = path.length === 0; // the root starts open (its toggle event builds its children)
    return details;
  }

  // ---------------------------------------------------------------- queue and jobs

  private _renderQueue(queue: IQueueEntry[]): void {
    this._clear(this._queue);
    if (!queue.length) {
      this._queue.appendChild(el('div', 'nnsight-Empty', 'the queue is empty'));
      return;
    }
    const list = el('ol', 'nnsight-QueueList');
    for (const entry of queue) {
      const who = entry.mine ? `yours (${(entry.job_id || '').slice(0, 8)})` : 'another user';
      const item = el('li', `nnsight-QueueEntry nnsight-Status-${entry.status}`,
        `${entry.model}: ${entry.status} ${entry.kind}, ${who}`);
      list.appendChild(item);
    }
    this._queue.appendChild(list);
  }

  private _renderJobs(jobs: IJobView[]): void {
    // Rows are rebuilt only when a job's state changes, so a cancel button is never replaced
    // under the pointer; while jobs run, only their wall time is updated in place.
    const key = JSON.stringify(jobs.map(j => [j.job_id, j.status, j.position, j.batch_id, j.rows, j.error_type]));
    if (key === this._jobsKey) {
      jobs.forEach(job => {
        const cell = this._jobs.querySelector(`tr[data-job-id="${job.job_id}"] td.nnsight-Wall`);
        if (cell) {
          cell.textContent = wallText(job);
        }
      });
      return;
    }
    this._jobsKey = key;
    this._clear(this._jobs);
    if (!jobs.length) {
      this._jobs.appendChild(el('div', 'nnsight-Empty', 'no jobs yet'));
      return;
    }
    const table = el('table', 'nnsight-Jobs');
    const head = el('tr', '');
    for (const title of ['job', 'status', 'batch', 'rows', 'wall', '']) {
      head.appendChild(el('th', '', title));
    }
    table.appendChild(head);
    for (const job of jobs) {
      table.appendChild(this._jobRow(job));
    }
    this._jobs.appendChild(table);
  }

  private _jobRow(job: IJobView): HTMLElement {
    const row = el('tr', `nnsight-Job nnsight-Status-${job.status}`);
    row.dataset.jobId = job.job_id;
    row.dataset.status = job.status;
    const status = job.status === 'queued' && job.position !== null ? `queued #${job.position + 1}` : job.status;
    const cells = [
      job.job_id.slice(0, 8),
      status,
      job.batch_id ? job.batch_id.slice(0, 8) : '',
      job.rows ? job.rows.join(',') : '',
      wallText(job)
    ];
    for (const text of cells) {
      row.appendChild(el('td', '', text));
    }
    row.cells[4].className = 'nnsight-Wall';
    row.cells[0].title = `${job.job_id} (${job.model}, ${job.kind})`;
    row.cells[1].title = job.error_message ? `${job.error_type}: ${job.error_message}` : job.kind;
    const action = el('td', '');
    if (job.status === 'queued' || job.status === 'running') {
      const cancel = el('button', 'nnsight-Cancel jp-Button', 'cancel');
      cancel.title = `cancel job ${job.job_id}`;
      cancel.addEventListener('click', () => {
        cancel.disabled = true;
        cancel.textContent = 'cancelling';
        cancelJob(job.job_id)
          .catch(error => {
            cancel.textContent = 'failed';
            cancel.title = String(error);
          })
          .finally(() => void this._poller.refresh());
      });
      action.appendChild(cancel);
    }
    row.appendChild(action);
    return row;
  }

  private _clear(sectionNode: HTMLElement): void {
    while (sectionNode.childNodes.length > 1) {
      sectionNode.removeChild(sectionNode.lastChild as ChildNode);
    }
  }
}
