// The gateway counts its connections as the relay's admission does (util/sources.ts).
export { ConnectionLimiter, sourceKey, type Refusal } from '../util/sources.ts';
