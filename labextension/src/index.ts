/**
 * The nbscale JupyterLab extension: a left-sidebar panel with the server's pools,
 * containers and calls, and the commands that act on them.
 */

import {
  ILabShell,
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { Dialog, ICommandPalette, showDialog } from '@jupyterlab/apputils';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { LabIcon } from '@jupyterlab/ui-components';

import iconSvg from '../style/icon.svg';
import { IAutoscalerChanges } from './models';
import { CurrentKernel } from './current';
import { mapViewPlugin } from './mapview';
import { SidebarModel } from './model';
import { CommandIDs, NbscalePanel } from './sidebar';

const PLUGIN_ID = 'nbscale:plugin';

export const nbscaleIcon = new LabIcon({
  name: 'nbscale:icon',
  svgstr: iconSvg
});

function idArgument(args: Record<string, unknown>): string {
  const id = args.id;
  if (typeof id !== 'string' || id === '') {
    throw new Error('this command needs an "id" argument');
  }
  return id;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    'A sidebar with nbscale pools, containers and calls: live, with autoscaler controls.',
  autoStart: true,
  optional: [ISettingRegistry, ICommandPalette, ILayoutRestorer, ILabShell],
  activate: async (
    app: JupyterFrontEnd,
    settingRegistry: ISettingRegistry | null,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    labShell: ILabShell | null
  ) => {
    let settings: ISettingRegistry.ISettings | null = null;
    if (settingRegistry !== null) {
      try {
        settings = await settingRegistry.load(PLUGIN_ID);
      } catch (reason) {
        console.warn('nbscale: could not load the settings', reason);
      }
    }
    const refreshInterval = () =>
      (settings?.composite.refreshInterval as number | undefined) ?? 2;

    const model = new SidebarModel({
      refreshInterval: refreshInterval(),
      serverSettings: app.serviceManager.serverSettings
    });
    settings?.changed.connect(() =>
      model.setRefreshInterval(refreshInterval())
    );

    const panel = new NbscalePanel(
      model,
      app.commands,
      new CurrentKernel(labShell)
    );
    panel.title.icon = nbscaleIcon;
    panel.title.caption = 'nbscale: pools, containers and calls';
    app.shell.add(panel, 'left', { rank: 450 });
    restorer?.add(panel, panel.id);

    const { commands } = app;
    commands.addCommand(CommandIDs.open, {
      label: 'Show nbscale Pools',
      caption: 'Open the nbscale sidebar',
      icon: nbscaleIcon,
      execute: () => app.shell.activateById(panel.id)
    });
    commands.addCommand(CommandIDs.refresh, {
      label: 'Refresh nbscale Pools',
      caption: 'Read the pools and calls from the server now',
      execute: () => model.refresh()
    });
    commands.addCommand(CommandIDs.updateAutoscaler, {
      label: 'Change Pool Autoscaler Settings',
      caption:
        'Change min/max/buffer containers or the scaledown window of a pool (args: id, changes)',
      execute: args =>
        model.updateAutoscaler(
          idArgument(args),
          (args.changes ?? {}) as IAutoscalerChanges
        )
    });
    commands.addCommand(CommandIDs.stopPool, {
      label: 'Stop Pool',
      caption: "Cancel a pool's calls and stop its containers (args: id)",
      execute: async args => {
        const id = idArgument(args);
        const pool = model.state.pool(id);
        const result = await showDialog({
          title: 'Stop this pool?',
          body:
            `Stopping ${pool?.function ?? id} cancels its unfinished calls and stops ` +
            'its containers. It starts again when the function is called again.',
          buttons: [
            Dialog.cancelButton(),
            Dialog.warnButton({ label: 'Stop pool' })
          ]
        });
        if (result.button.accept) {
          await model.stopPool(id);
        }
      }
    });
    commands.addCommand(CommandIDs.cancelCall, {
      label: 'Cancel Call',
      caption: "Cancel a call's pending and running inputs (args: id)",
      execute: async args => {
        const id = idArgument(args);
        const call = model.state.call(id)?.call;
        const what = call === undefined ? id : `${call.function}.${call.kind}`;
        const result = await showDialog({
          title: 'Cancel this call?',
          body:
            `Cancelling ${what} (${id}) drops its pending inputs and stops its ` +
            'running ones; the results it has not delivered are lost, and a kernel ' +
            'waiting on it gets CallCancelledError.',
          buttons: [
            Dialog.cancelButton({ label: 'Keep running' }),
            Dialog.warnButton({ label: 'Cancel call' })
          ]
        });
        if (result.button.accept) {
          await model.cancelCall(id);
        }
      }
    });

    palette?.addItem({ command: CommandIDs.open, category: 'nbscale' });
    palette?.addItem({ command: CommandIDs.refresh, category: 'nbscale' });
  }
};

export default [plugin, mapViewPlugin];
