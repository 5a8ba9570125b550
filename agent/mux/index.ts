// Public API of the yamux multiplexer (hashicorp spec), the tunnel hot path.
export { MuxSession, type MuxRole } from './session.ts';
export { MuxStream, type StreamHoldHook } from './stream.ts';
export { WindowBudget } from './budget.ts';
export { MuxError, type MuxErrorCode } from './errors.ts';
export { defaultMuxConfig, validateMuxConfig, type MuxConfig } from './config.ts';
export { FrameDecoder, type FrameHandler } from './decoder.ts';
export {
  Flag,
  FrameType,
  GoAwayCode,
  HEADER_LENGTH,
  INITIAL_STREAM_WINDOW,
  VERSION,
  decodeHeader,
  encodeHeader,
  newHeader,
  type FrameHeader,
} from './frame.ts';
