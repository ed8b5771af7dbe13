/**
 * UI settings of the sidebar (schema/plugin.json) and the per-turn cost they price.
 */
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { IUsage } from './request';

/** The settings the sidebar reads. */
export interface IKimiSettings {
  showReasoning: boolean;
  diffView: 'side-by-side' | 'unified';
  sendActiveCell: boolean;
  thinking: boolean;
  inputPricePerMillion: number;
  cachedInputPricePerMillion: number;
  outputPricePerMillion: number;
}

/** Defaults, identical to the schema's. */
export const DEFAULT_SETTINGS: IKimiSettings = {
  showReasoning: false,
  diffView: 'side-by-side',
  sendActiveCell: true,
  thinking: true,
  inputPricePerMillion: 0.6,
  cachedInputPricePerMillion: 0.15,
  outputPricePerMillion: 2.5
};

/** Read the composite settings, falling back to the defaults for anything missing. */
export function readSettings(
  settings: ISettingRegistry.ISettings | null
): IKimiSettings {
  const composite = (settings?.composite ?? {}) as Partial<IKimiSettings>;
  return { ...DEFAULT_SETTINGS, ...composite };
}

/** Dollar cost of one turn's usage at the configured prices. */
export function costOf(usage: IUsage, settings: IKimiSettings): number {
  const uncached = Math.max(0, usage.prompt_tokens - usage.cached_tokens);
  return (
    (uncached * settings.inputPricePerMillion +
      usage.cached_tokens * settings.cachedInputPricePerMillion +
      usage.completion_tokens * settings.outputPricePerMillion) /
    1e6
  );
}
