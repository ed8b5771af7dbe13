/**
 * The Kimi icon (sidebar tab, commands, cell toolbar).
 */
import { LabIcon } from '@jupyterlab/ui-components';

import kimiSvg from '../style/icons/kimi.svg';

export const kimiIcon = new LabIcon({ name: 'kimi-nb:kimi', svgstr: kimiSvg });
