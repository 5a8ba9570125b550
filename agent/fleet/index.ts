// Fleet: the contract that lists who may reach a device's protected ports,
// the admin functions that edit it, and the device side that reads it.
export { FleetError, FLEET_ERROR_CODES, type FleetErrorCode } from './errors.ts';
export { FLEET_ABI, FLEET_BYTECODE, FLEET_CONTRACT_NAME, FLEET_INTERFACE } from './artifact.ts';
export {
  deployFleet,
  addMembers,
  removeMembers,
  listMembers,
  isMember,
  normalizeAddress,
  MEMBERS_PER_TX,
  type FleetAdminOptions,
  type TxResult,
  type DeployResult,
  type MembersResult,
} from './admin.ts';
export {
  FleetMembership,
  FLEET_MEMBERSHIP_DEFAULTS,
  resolveMembershipConfig,
  type FleetMembershipConfig,
} from './membership.ts';
export { readAdminKey, parsePrivateKey, ADMIN_KEY_ENV, type AdminKeySource } from './key.ts';
export { revertName } from './mapError.ts';
