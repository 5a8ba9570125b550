// Placeholder entry: replaced by the real command table in the spine commit.
declare const __DIODE_VERSION__: string;
declare const __DIODE_COMMIT__: string;
console.log(`diode ${typeof __DIODE_VERSION__ === 'string' ? __DIODE_VERSION__ : 'dev'} (${typeof __DIODE_COMMIT__ === 'string' ? __DIODE_COMMIT__ : 'dev'})`);
