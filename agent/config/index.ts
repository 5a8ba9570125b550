export { ConfigStore, parseAssignment } from './store.ts';
export { readConfigValue, configPath } from './read.ts';
export { CONFIG_KEYS, configKeySpec, DEFAULT_RELAY_PORT } from './keys.ts';
