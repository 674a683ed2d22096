/**
 * What the tab that holds the connection tells every tab (itself included): the same messages whether the
 * connection is in this tab or another one, so a tab applies them the same way whatever its role.
 */
import type { ConnectionStatus } from './events.js';
import type { TopicUpdate } from './topics.js';
import type { InboxFrame } from './types.js';
export type Update = {
    kind: 'frame';
    frame: InboxFrame;
} | {
    kind: 'topic';
    update: TopicUpdate;
} | {
    kind: 'status';
    status: ConnectionStatus;
} | {
    kind: 'authError';
    message: string;
};
