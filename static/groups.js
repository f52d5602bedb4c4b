// Group management on the client: the owner's routes, the group events of the socket
// (cmd 30: group_joined, group_left, group_updated, member_removed) and the sentences
// of group notices (media 100, PROTOCOL.md "Group notices").

import * as api from './api.js';
import { CMD } from './commands.js';

/** The `media` of a group notice. */
export const NOTICE = 100;

export const updateGroup = (dstid, fields) => api.post('/contact/updatecommunity', { dstid, ...fields }).then((r) => r.data);
export const removeMember = (dstid, memberid) => api.post('/contact/removemember', { dstid, memberid });
export const transferGroup = (dstid, memberid) => api.post('/contact/transfercommunity', { dstid, memberid }).then((r) => r.data);
export const leaveGroup = (dstid) => api.post('/contact/leavecommunity', { dstid });

/** The notice a message carries, or null if it is not one. */
export function noticeOf(m) {
  if (m?.media !== NOTICE) return null;
  try {
    const n = JSON.parse(m.content || '');
    return n && typeof n.notice === 'string' ? n : null;
  } catch {
    return null;
  }
}

/** Whether `m` is the notice of `me`'s removal (the group is no longer theirs to mark read). */
export function removesMe(m, me) {
  const n = noticeOf(m);
  return n?.notice === 'removed' && n.userid === me;
}

/** What a notice says, for a person ("Ann joined"); `me` names the reader "You". */
export function noticeText(m, me) {
  const n = noticeOf(m);
  if (!n) return '';
  const who = (id, nick) => (id === me?.id ? 'You' : nick || `User ${id}`);
  const user = who(n.userid, n.nickname);
  const by = who(n.by, n.bynickname);
  switch (n.notice) {
    case 'joined':
      return `${user} joined`;
    case 'left':
      return `${user} left`;
    case 'removed':
      return `${user} ${user === 'You' ? 'were' : 'was'} removed by ${by === 'You' ? 'you' : by}`;
    case 'renamed':
      return `${by} renamed the group to “${n.name}”`;
    case 'icon':
      return `${by} changed the group icon`;
    case 'owner':
      return `${by} made ${user === 'You' ? 'you' : user} the owner`;
    default:
      return '';
  }
}

/**
 * A group event from the socket: keeps `session.groups` current and tells the views
 * ('contacts' for the lists, 'group-gone' when the reader is no longer a member).
 * Other cmd 30 events are not groups' and are left alone.
 */
export function onGroupEvent(session, f) {
  if (f.cmd !== CMD.CONTACT) return false;
  switch (f.event) {
    case 'group_joined':
    case 'group_updated':
      if (f.group?.id) session.groups.set(f.group.id, f.group);
      break;
    case 'group_left':
    case 'member_removed':
      {
        const name = session.groups.get(f.groupid)?.name || '';
        session.groups.delete(f.groupid);
        session.emit('group-gone', { id: f.groupid, name, removed: f.event === 'member_removed' });
      }
      break;
    default:
      return false;
  }
  session.emit('contacts');
  return true;
}
