import qrcode from 'qrcode-terminal';

/** The address as a terminal QR code (half-height blocks, fits an 80x25 console). */
export function renderQr(text: string): string {
  let out = '';
  qrcode.generate(text, { small: true }, (qr: string) => {
    out = qr;
  });
  return out.endsWith('\n') ? out : out + '\n';
}
