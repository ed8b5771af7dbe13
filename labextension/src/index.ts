import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';

/**
 * The kimi-nb sidebar plugin.
 */
const plugin: JupyterFrontEndPlugin<void> = {
  id: 'kimi-nb:plugin',
  description: 'Kimi chat sidebar for notebooks.',
  autoStart: true,
  activate: (app: JupyterFrontEnd) => {
    console.debug('kimi-nb activated', app.name);
  }
};

export default plugin;
