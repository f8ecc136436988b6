/**
 * nnsight-jupyter's JupyterLab extension: a status-bar item and a side panel that follow the
 * model host (hosted models, the queue, your jobs, with cancel). One poller feeds both.
 */
import { ILabShell, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';

import { HostPanel } from './panel';
import { HostPoller } from './poll';
import { HostStatusItem } from './status';

const ICON_SVG =
  '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><g class="jp-icon3" fill="#616161">' +
  '<circle cx="5" cy="6" r="2.2"/><circle cx="5" cy="18" r="2.2"/><circle cx="12" cy="12" r="2.2"/>' +
  '<circle cx="19" cy="6" r="2.2"/><circle cx="19" cy="18" r="2.2"/>' +
  '<path d="M6.5 7.2l4 3.6M6.5 16.8l4-3.6M13.5 10.8l4-3.6M13.5 13.2l4 3.6" stroke="#616161" stroke-width="1.2"/>' +
  '</g></svg>';

export const nnsightIcon = new LabIcon({ name: 'nnsight-jupyter:host', svgstr: ICON_SVG });

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'nnsight-jupyter:host',
  description: 'Shows the nnsight model host: hosted models, the queue and your jobs, with cancel.',
  autoStart: true,
  requires: [ILabShell],
  optional: [IStatusBar],
  activate: (app: JupyterFrontEnd, shell: ILabShell, statusBar: IStatusBar | null) => {
    const poller = new HostPoller();
    const panel = new HostPanel(poller);
    panel.title.icon = nnsightIcon;
    shell.add(panel, 'right', { rank: 900 });
    app.commands.addCommand('nnsight-jupyter:open-panel', {
      label: 'Show the nnsight model host panel',
      execute: () => shell.activateById(panel.id)
    });
    poller.changed.connect((_, state) => panel.render(state));
    if (statusBar) {
      const item = new HostStatusItem(() => void app.commands.execute('nnsight-jupyter:open-panel'));
      poller.changed.connect((_, state) => item.render(state));
      statusBar.registerStatusItem('nnsight-jupyter:status', { item, align: 'left', rank: 100 });
    }
    poller.start();
  }
};

export default plugin;
