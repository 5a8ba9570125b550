// The compiled DiodeFleet contract (contracts/artifacts/DiodeFleet.json,
// written by scripts/compile-contract.mjs). Imported statically so that
// esbuild puts it inside the one-file bundle: no compiler, no file at run time.
import artifact from '../../contracts/artifacts/DiodeFleet.json' with { type: 'json' };
import { Interface, type InterfaceAbi } from 'ethers';

export const FLEET_CONTRACT_NAME: string = artifact.contractName;
export const FLEET_ABI: InterfaceAbi = artifact.abi as InterfaceAbi;
export const FLEET_BYTECODE: string = artifact.bytecode;
export const FLEET_INTERFACE: Interface = new Interface(FLEET_ABI);

/** Log topics of the membership events (topic 0). */
export const MEMBER_ADDED_TOPIC: string = FLEET_INTERFACE.getEvent('MemberAdded')!.topicHash;
export const MEMBER_REMOVED_TOPIC: string = FLEET_INTERFACE.getEvent('MemberRemoved')!.topicHash;
