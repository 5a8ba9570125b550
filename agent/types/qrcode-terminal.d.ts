declare module 'qrcode-terminal' {
  export function generate(text: string, options: { small?: boolean }, callback: (qr: string) => void): void;
  const qrcode: { generate: typeof generate };
  export default qrcode;
}

/** The QR encoder qrcode-terminal carries (Kazuhiko Arase's): only the module matrix is used. */
declare module 'qrcode-terminal/vendor/QRCode/index.js' {
  class QRCode {
    constructor(typeNumber: number, errorCorrectLevel: number);
    addData(data: string): void;
    make(): void;
    getModuleCount(): number;
    isDark(row: number, col: number): boolean;
  }
  export default QRCode;
}

declare module 'qrcode-terminal/vendor/QRCode/QRErrorCorrectLevel.js' {
  const levels: { L: number; M: number; Q: number; H: number };
  export default levels;
}
